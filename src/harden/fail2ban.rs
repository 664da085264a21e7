//! Step `fail2ban` (being written).
