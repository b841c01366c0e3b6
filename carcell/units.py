"""The one unit per dimension that carcell uses internally.

Time is in days, cell numbers are whole-body counts (cells), cytokine concentrations are in
pg/mL of plasma, blood concentrations of cells in cells/uL, qPCR exposure in transgene
copies per ug of genomic DNA. Data files may only use the units listed in :data:`KNOWN_UNITS`.
"""

KNOWN_UNITS: frozenset[str] = frozenset(
    {
        "1",  # dimensionless: fractions, multipliers, Hill coefficients
        "1/day",
        "day",
        # published models (carcell/published): their own units, kept as the papers state them
        "1/cells",        # inverse carrying capacity
        "1/(cells*day)",  # mass-action rate constants per cell (CARTmath, Leon-Triana)
        "1/h",            # Hanson 2016 is in hours
        "au",             # arbitrary units (Hanson 2016 states none)
        "1/au",
        "au/h",
        "1/(au*h)",
        "cells",
        "cells/kg",
        "cells/day",
        "cells/uL",
        "cells/mL",  # tumour cells per mL of tumour (RECIST diameters)
        "mm",  # RECIST absolute progression threshold
        "cells/ug",
        "copies/cell",
        "copies/ug",
        "pg/mL",
        "pg/mL/day",
        "mL/kg",
        "kg",
        "nM",
        "years",
        "percent",
        "molecules/cell",  # antigen density (quantitative flow, antibody-binding capacity)
        "cells/m2",  # doses per body-surface area
        "1/s",  # binder off-rates
        "aa",  # amino-acid length of hinges and spacers
        "degC",  # body temperature
        "L/min",  # oxygen flow
        "min",  # durations at the bedside (seizures)
        "h",  # dosing intervals
        "mg",  # drug doses
        "mg/kg",
        "ug/mL",  # drug concentrations (mg/L)
        "L/kg",  # volumes of distribution
        "L",
        "g/mol",
        "[mg, h, day]",  # a dosing schedule: steps of [dose, every, for how many days]
        "g/dL",  # haemoglobin
        "mg/dL",  # IgG, CRP
        "ng/mL",  # ferritin
        "U/L",  # LDH
        "1e9/L",  # platelets
        "g/kg",  # IVIG doses
        "g",
        "months",  # trial medians as published (1 month = 30.4375 days)
        "1/year",  # background mortality
        "1/month",  # event rates of comparator arms, manufacturing slots per month
        "USD",  # prices and costs (US dollars of the year the source states)
        "USD/day",  # per-day hospital costs
        "miles",  # travel distance to a treatment centre
        "doses",  # doses per allogeneic batch
        "mL",  # volumes of blood and plasma (preclinical hosts)
        "uL",  # well volumes of in-vitro assays
        "mm3",  # xenograft tumour volumes (caliper convention)
        "cells/mm3",  # tumour cells per mm3 of xenograft
        "IU/mL",  # IL-2 in culture medium
        "pg/IU",  # mass of one international unit of a cytokine
    }
)

UL_PER_ML = 1000.0
DAYS_PER_MONTH = 30.4375   # 365.25 / 12: trial medians in months, as published
