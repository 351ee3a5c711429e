//! Step 1 of the data flow: bytes in, lean typed model out.
//!
//! `review` decodes an `AdmissionReview` (the webhook's wire format),
//! `manifest` decodes YAML/JSON manifest files for `podgate check`; both land
//! in the same [`model`], which is all the later steps see.

pub mod json;
pub mod locate;
pub mod manifest;
pub mod model;
pub mod review;
