//! `manifests/images.toml`: the pinned k3s release and container images (tag and digest).
//!
//! The file is compiled into the binary (what is rendered is what was tested) and is also read
//! by the image builder, which downloads exactly these references for the air-gap directory.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::ManifestError;

/// The pins file as shipped in the repository.
pub const IMAGES_TOML: &str = include_str!("../../../manifests/images.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pins {
    pub k3s: K3sPin,
    pub images: BTreeMap<String, ImagePin>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K3sPin {
    /// `v1.36.3+k3s1`.
    pub version: String,
    /// Kubernetes minor, `1.36`.
    pub kubernetes: String,
    pub binary_sha256: String,
    pub airgap_images: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagePin {
    pub repository: String,
    pub tag: String,
    pub digest: String,
}

impl ImagePin {
    /// `repository:tag@sha256:...`: the tag for people, the digest for the container runtime.
    pub fn reference(&self) -> String {
        format!("{}:{}@{}", self.repository, self.tag, self.digest)
    }

    /// `(major, minor)` of a `X.Y[.Z]` tag, if it is one.
    pub fn version(&self) -> Option<(u32, u32)> {
        let mut it = self.tag.split('.');
        let major = it.next()?.parse().ok()?;
        let minor = it.next()?.parse().ok()?;
        Some((major, minor))
    }
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Pins {
    /// The pins compiled into this binary.
    pub fn embedded() -> Result<Pins, ManifestError> {
        Pins::parse(IMAGES_TOML)
    }

    /// Parses and checks a pins file: every image has a tag and a sha256 digest, k3s a version
    /// whose minor is `kubernetes`.
    pub fn parse(text: &str) -> Result<Pins, ManifestError> {
        let pins: Pins =
            toml::from_str(text).map_err(|e| ManifestError::Pins(e.message().to_owned()))?;
        let bad = |m: String| Err(ManifestError::Pins(m));
        for (name, p) in &pins.images {
            if p.repository.is_empty() || p.tag.is_empty() {
                return bad(format!("images.{name}: repository and tag are required"));
            }
            match p.digest.strip_prefix("sha256:") {
                Some(h) if is_hex64(h) => {}
                _ => {
                    return bad(format!(
                        "images.{name}.digest: not `sha256:` + 64 hex digits"
                    ));
                }
            }
        }
        if !is_hex64(&pins.k3s.binary_sha256) {
            return bad("k3s.binary_sha256: not 64 hex digits".to_owned());
        }
        let want = format!("v{}.", pins.k3s.kubernetes);
        if !pins.k3s.version.starts_with(&want) || !pins.k3s.version.contains("+k3s") {
            return bad(format!(
                "k3s.version `{}` is not a k3s release of Kubernetes {}",
                pins.k3s.version, pins.k3s.kubernetes
            ));
        }
        for required in ["mongodb", "rocketchat"] {
            if !pins.images.contains_key(required) {
                return bad(format!("images.{required} is missing"));
            }
        }
        Ok(pins)
    }

    pub fn image(&self, name: &str) -> Result<&ImagePin, ManifestError> {
        self.images
            .get(name)
            .ok_or_else(|| ManifestError::Pins(format!("images.{name} is missing")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_pins_parse() {
        let p = Pins::embedded().unwrap();
        let mongo = p.image("mongodb").unwrap();
        assert_eq!(mongo.version().map(|v| v.0), Some(8));
        assert!(mongo.reference().contains(":8.0.") && mongo.reference().contains("@sha256:"));
        assert_eq!(
            p.image("rocketchat").unwrap().version().map(|v| v.0),
            Some(8)
        );
    }

    #[test]
    fn pinned_kubernetes_minor_matches_the_compiled_k8s_openapi_feature() {
        let p = Pins::embedded().unwrap();
        #[allow(unreachable_code)]
        fn compiled() -> Option<&'static str> {
            k8s_openapi::k8s_if_1_36! { return Some("1.36"); }
            None
        }
        assert_eq!(
            compiled(),
            Some(p.k3s.kubernetes.as_str()),
            "supervisor/Cargo.toml's k8s-openapi feature must match manifests/images.toml"
        );
    }

    #[test]
    fn bad_pins_are_refused() {
        let good = IMAGES_TOML;
        let no_digest = good.replace("sha256:4968", "sha256:zz68");
        assert!(
            Pins::parse(&no_digest)
                .unwrap_err()
                .to_string()
                .contains("mongodb.digest")
        );
        let wrong_minor = good.replace("kubernetes = \"1.36\"", "kubernetes = \"1.35\"");
        assert!(
            Pins::parse(&wrong_minor)
                .unwrap_err()
                .to_string()
                .contains("k3s.version")
        );
        let unknown = format!("{good}\n[extra]\nx = 1\n");
        assert!(Pins::parse(&unknown).is_err());
    }
}
