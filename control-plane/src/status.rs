//! Per-stream xDS status (being written).
