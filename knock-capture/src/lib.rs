//! knock-capture (under construction).
