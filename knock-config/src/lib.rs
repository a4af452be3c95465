//! knock-config (under construction).
