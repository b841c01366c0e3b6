"""Virtual trials: arms and randomisation (run), deaths (survival), standard-of-care comparators
(soc), endpoints and comparisons (stats), population calibration (calibrate). docs/trials.md."""
