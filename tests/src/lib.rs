//! Multi-process cluster tests live in tests/tests/; this library is empty.
