//! `podgate check`'s manifest parser and the engine on arbitrary text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use podgate::config::Policy;
use podgate::decode::manifest::{for_each_document, Syntax};
use podgate::extract::WorkloadKind;
use podgate::exemption::Subject;
use podgate::verdict::evaluate_object;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let policy = Policy::default();
    for syntax in [Syntax::Yaml, Syntax::Json] {
        for_each_document(text, syntax, |_, document| {
            let Ok(document) = document else { return };
            for found in document.into_objects() {
                let object = &found.object;
                let kind = WorkloadKind::from_api_version_kind(
                    object.api_version.as_deref().unwrap_or_default(),
                    object.kind.as_deref().unwrap_or_default(),
                );
                if let Some(kind) = kind {
                    let subject = Subject::stored(kind, object, None);
                    let _ = evaluate_object(&policy, &subject, kind, object, podgate::exemption::Clock::System.now()).denial_message();
                }
            }
        });
    }
});
