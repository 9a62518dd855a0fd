//! Fuzz targets for canarie-agent's parsers of untrusted input. The targets are one line
//! each; what they check is in [`checks`].

pub mod checks;
