"""Reading and writing files: YAML with scientific notation, parquet, netCDF, JSON."""
