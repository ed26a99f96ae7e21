"""Generated msgspec types, one module per OCPP version (see codegen.py)."""
