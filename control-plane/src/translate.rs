//! Registry view -> xDS resources (being written).
