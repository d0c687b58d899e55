//! Loom models (see below).
