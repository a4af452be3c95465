//! knock-firewall (under construction).
