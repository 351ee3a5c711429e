//! The webhook's request decoder and the engine on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use podgate::config::Policy;
use podgate::decode::review;
use podgate::extract::WorkloadKind;
use podgate::exemption::Subject;
use podgate::verdict::evaluate_object;

fuzz_target!(|body: &[u8]| {
    let Ok(review) = review::decode(body) else { return };
    let Some(request) = review.request.as_ref() else { return };
    let (Some(gvk), Some(object)) = (request.kind.as_ref(), request.object.as_ref()) else { return };
    if let Some(kind) = WorkloadKind::from_group_kind(&gvk.group, &gvk.kind) {
        let policy = Policy::default();
        let subject = Subject {
            namespace: request.namespace.as_deref(),
            username: request.user_info.as_ref().and_then(|u| u.username.as_deref()),
            groups: request.user_info.as_ref().map_or(&[], |u| u.groups.as_slice()),
            name: object.metadata.as_ref().and_then(|m| m.name.as_deref()),
            owner_references: object.metadata.as_ref().map_or(&[], |m| m.owner_references.as_slice()),
            ..Subject::default()
        };
        let _ = evaluate_object(&policy, &subject, kind, object, podgate::exemption::Clock::System.now()).denial_message();
    }
});
