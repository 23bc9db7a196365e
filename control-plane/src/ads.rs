//! ADS server (being written).
