"""carcell: in-silico CAR-T and CAR-NK cell therapy, from a scenario file to a virtual cohort."""

__version__ = "0.1.0"
