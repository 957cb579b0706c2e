//! Markers for keys Gantry parses but refuses or ignores on purpose.

use serde::Deserialize;
use serde::de::{Deserializer, Error, IgnoredAny};

/// A Traefik feature Gantry does not implement. Deserializing one is an error, so the operator
/// learns at load time (with the key path, file and line) instead of finding it silently ignored.
#[derive(Debug, Clone)]
pub struct Unsupported;

impl<'de> Deserialize<'de> for Unsupported {
    fn deserialize<D: Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(D::Error::custom(
            "this Traefik feature is not supported by Gantry (see the proxy README for the supported keys)",
        ))
    }
}

/// A key accepted for compatibility whose value has no effect in Gantry (documented per field).
#[derive(Debug, Clone)]
pub struct Ignored;

impl<'de> Deserialize<'de> for Ignored {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(d).map(|_| Ignored)
    }
}
