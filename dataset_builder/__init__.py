"""AnaTuple ROOT -> Parquet -> `datasets` -> model tensors. See `schema.py` for the converted-dataset contract."""
