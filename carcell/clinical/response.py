"""Response by the disease's own criteria, read at scheduled assessments.

* Lugano 2014 (lymphoma, doi:10.1200/JCO.2013.54.8800): the sum of products of diameters
  scales as burden^(2/3); CR when the lymphoma is below PET detection, PR at >=50% SPD
  decrease, PD at >=50% SPD increase from the nadir.
* IMWG 2016 (myeloma, doi:10.1016/S1470-2045(16)30206-6): M-protein taken proportional to
  burden; CR, VGPR (>=90%), PR (>=50%), PD (>=25% increase from nadir that is also an absolute
  rise of at least ``pd_absolute_increase`` g/dL of serum M-protein, read against each
  patient's baseline M-protein, :func:`baseline_m_protein`); stringent CR and MRD negativity
  when the burden falls below the flow and next-generation thresholds.
* B-ALL: marrow blasts = leukaemic cells / (leukaemic + normal marrow cells); CR below 5%,
  MRD-negative below 1e-4; relapse when blasts return to >=5% after CR. A patient never in
  CR is a non-responder (NR), counted as a treatment failure at the first assessment, as
  event-free survival is counted in ELIANA.
* RECIST 1.1 (solid tumours, Eisenhauer 2009, doi:10.1016/j.ejca.2008.10.026): the burden is
  spread over ``lesions`` equal spheres at ``cells_per_ml``; the sum of their longest diameters
  gives PR at a >=30% decrease from baseline and PD at a >=20% increase over the nadir that is
  also >=5 mm; CR when the lesions have disappeared (burden below ``cr_detectable_cells``).
* RANO (brain tumours, Wen 2010, doi:10.1200/JCO.2009.26.3541): the same lesions read by the sum
  of products of perpendicular diameters (diameter squared): PR at >=50% decrease, PD at >=25%
  increase over the nadir, CR when they have disappeared. Steroid dose and clinical status,
  which RANO also weighs, are not simulated.

Thresholds come from the indication's knowledge file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RANK = {"CR": 0, "VGPR": 1, "PR": 2, "SD": 3, "NR": 4, "PD": 5}

_M_PROTEIN_STREAM = 11   # spawn-key tag of the baseline M-protein draw, apart from every other draw


def baseline_m_protein(r: dict, seed: int, ids: np.ndarray) -> np.ndarray | None:
    """Each myeloma patient's serum M-protein at baseline, g/dL: log-normal
    (``baseline_m_protein`` = [median, log-SD]), at least the level that makes the disease
    measurable (``measurable_m_protein``), from the patient's own stream
    (``SeedSequence(seed, spawn_key=(id, 11))``), so it does not depend on chunking. None when the
    indication has no such entry (the absolute rule is then not applied)."""
    if "baseline_m_protein" not in r:
        return None
    median, log_sd = (float(v) for v in r["baseline_m_protein"])
    z = np.array([np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(int(i), _M_PROTEIN_STREAM)))
                  .standard_normal() for i in ids])
    return np.maximum(median * np.exp(log_sd * z), float(r["measurable_m_protein"]))


@dataclass
class Responses:
    best_response: np.ndarray      # object array of category names
    response_day: np.ndarray       # float, NaN if never responded
    progression_day: np.ndarray    # float, NaN if no progression
    relapse_antigen: np.ndarray    # "positive" / "negative" / "none"
    best_change: np.ndarray        # best relative change of burden (-1..), for the waterfall
    mrd_negative: np.ndarray       # bool; B-ALL and myeloma (False in lymphoma)
    stringent_cr: np.ndarray       # bool; myeloma only (IMWG sCR; False elsewhere)
    categories: np.ndarray         # (n, n_assessments) category at each assessment
    assessment_days: np.ndarray


def _classify(criteria: str, burden: np.ndarray, base: np.ndarray, nadir: np.ndarray,
              in_cr_before: np.ndarray, r: dict, m_protein: np.ndarray | None = None) -> np.ndarray:
    n = burden.size
    cat = np.full(n, "SD", dtype=object)
    if criteria == "lugano":
        spd = (burden / base) ** (2 / 3)
        spd_nadir = (nadir / base) ** (2 / 3)
        detectable = burden >= r["cr_detectable_cells"]
        cat[spd <= 1 - r["pr_spd_fraction"]] = "PR"
        cat[~detectable] = "CR"
        cat[detectable & (spd >= (1 + r["pd_spd_increase"]) * spd_nadir)] = "PD"
    elif criteria == "imwg":
        ratio = burden / base
        detectable = ratio > r["cr_fraction"]
        cat[ratio <= r["pr_fraction"]] = "PR"
        cat[ratio <= r["vgpr_fraction"]] = "VGPR"
        cat[~detectable] = "CR"
        grown = burden >= (1 + r["pd_increase"]) * nadir
        if m_protein is not None:   # and an absolute rise of serum M-protein
            grown &= (burden - nadir) / base * m_protein >= r["pd_absolute_increase"]
        cat[detectable & grown] = "PD"
    elif criteria == "marrow_blasts":
        blasts = burden / (burden + r["marrow_cells"])
        cr = blasts < r["cr_blast_fraction"]
        cat[:] = "NR"
        cat[cr] = "CR"
        cat[~cr & in_cr_before] = "PD"  # relapse
    elif criteria in ("recist", "rano"):
        size, size_base, size_nadir = (lesion_measure(criteria, x, r) for x in (burden, base, nadir))
        detectable = burden >= r["cr_detectable_cells"]
        cat[size <= (1 - r["pr_fraction"]) * size_base] = "PR"
        cat[~detectable] = "CR"
        grown = size >= (1 + r["pd_increase"]) * size_nadir
        if criteria == "recist":   # and at least 5 mm in absolute terms
            grown &= size - size_nadir >= r["pd_absolute_mm"]
        cat[detectable & grown] = "PD"
    else:  # pragma: no cover - guarded by the knowledge files
        raise ValueError(f"unknown response criteria {criteria!r}")
    return cat


def lesion_measure(criteria: str, burden: np.ndarray, r: dict) -> np.ndarray:
    """RECIST sum of longest diameters (mm) or RANO sum of products of diameters (mm2) of
    ``lesions`` equal spheres holding ``burden`` tumour cells at ``cells_per_ml``."""
    lesions = float(r["lesions"])
    volume_mm3 = np.maximum(burden, 0.0) / float(r["cells_per_ml"]) * 1000.0 / lesions
    diameter = np.cbrt(6.0 * volume_mm3 / np.pi)
    return lesions * (diameter if criteria == "recist" else diameter ** 2)


def assess(criteria: str, times: np.ndarray, burden: np.ndarray, tumour_pos: np.ndarray,
           tumour_neg: np.ndarray, r: dict, follow_up: float, tumour_low: np.ndarray | None = None,
           m_protein: np.ndarray | None = None) -> Responses:
    """Classify every patient at each assessment day.

    ``m_protein``: myeloma only, each patient's baseline serum M-protein (g/dL,
    :func:`baseline_m_protein`); with it, progression also needs the IMWG absolute rise.

    ``burden``, ``tumour_pos``, ``tumour_neg`` (and ``tumour_low``, the antigen-low clone of a
    solid tumour): whole-body tumour cells, shape (n, len(times)). A relapse is labelled by its
    largest clone: antigen "positive", "low" or "negative".
    """
    n = burden.shape[0]
    days = np.array([d for d in r["assessment_days"] if d <= follow_up], dtype=float)
    idx = np.searchsorted(times, days)
    base = burden[:, 0]
    nadir = base.copy()
    in_cr = np.zeros(n, bool)
    cats = np.empty((n, days.size), dtype=object)
    best = np.full(n, "PD" if criteria != "marrow_blasts" else "NR", dtype=object)
    response_day = np.full(n, np.nan)
    progression_day = np.full(n, np.nan)
    relapse_antigen = np.full(n, "none", dtype=object)
    mrd_neg = np.zeros(n, bool)
    stringent = np.zeros(n, bool)
    progressed = np.zeros(n, bool)
    for j, (d, i) in enumerate(zip(days, idx)):
        b = burden[:, i]
        cat = _classify(criteria, b, base, nadir, in_cr, r, m_protein)
        cats[:, j] = cat
        live = ~progressed
        better = np.array([RANK[c] for c in cat]) < np.array([RANK[c] for c in best])
        upd = live & better & (cat != "PD")
        best[upd] = cat[upd]
        responded = np.isin(cat, ["CR", "VGPR", "PR"]) & live & np.isnan(response_day)
        response_day[responded] = d
        if criteria == "marrow_blasts":
            blasts = b / (b + r["marrow_cells"])
            mrd_neg |= live & (blasts < r["mrd_negative_fraction"])
        elif criteria == "imwg":   # deeper than CR: no clonal cells by flow (sCR), MRD by NGF/NGS
            ratio = b / base
            stringent |= live & (cat == "CR") & (ratio < r["scr_fraction"])
            mrd_neg |= live & (cat == "CR") & (ratio < r["mrd_negative_fraction"])
        new_pd = live & (cat == "PD")
        if criteria == "marrow_blasts" and j == 0:
            new_pd |= live & (cat == "NR")  # never in remission: failure at first assessment
        progression_day[new_pd] = d
        rel = live & (cat == "PD")
        clones = [tumour_pos[rel, i], tumour_neg[rel, i]] + ([tumour_low[rel, i]] if tumour_low is not None else [])
        relapse_antigen[rel] = np.array(["positive", "negative", "low"], dtype=object)[np.argmax(np.stack(clones), axis=0)]
        progressed |= new_pd
        in_cr |= cat == "CR"
        nadir = np.minimum(nadir, b)
    # first-assessment PD in lymphoma/myeloma keeps best response PD
    best_change = np.min(burden[:, : idx[-1] + 1 if idx.size else 1] / base[:, None], axis=1) - 1.0
    return Responses(best, response_day, progression_day, relapse_antigen, best_change,
                     mrd_neg, stringent, cats, days)
