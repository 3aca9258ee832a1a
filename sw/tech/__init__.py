"""Technology files (TOML) and recorded generic-cell counts; data only."""
