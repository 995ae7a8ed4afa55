//! Task placement (see the module plan in ARCHITECTURE.md).
