//! The image builder behind `gantry build` (not built yet: see the image builder issue).
//!
//! It will own turning pinned inputs (Debian suite and packages, k3s and its air-gap images, app
//! images, the `gantry` binary) into a GPT disk with an ESP, A/B root slots and a data partition, as
//! raw and qcow2 outputs and signed update bundles. It runs at build time only and never on the
//! appliance's request path; it does not depend on the proxy, supervisor or web UI crates.
