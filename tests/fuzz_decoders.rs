//! Bounded fuzzing that runs in every `cargo test`: arbitrary bytes and
//! structure-aware mutations of real reviews and manifests go through the
//! decoders and the engine. Nothing may panic; every input ends as a verdict
//! or a decode error. The long-running coverage-guided session lives in
//! `fuzz/` (see docs/development.md, "Fuzzing").
//!
//! `PODGATE_FUZZ_CASES` raises the number of cases per property (default 256).

use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;

use podgate::config::Policy;
use podgate::decode::locate::Locator;
use podgate::decode::manifest::{for_each_document_with_source, Syntax};
use podgate::decode::review;
use podgate::exemption::Subject;
use podgate::extract::WorkloadKind;
use podgate::verdict::evaluate_object;

fn fixture(relative: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(relative)).unwrap()
}

fn runner() -> TestRunner {
    let cases = std::env::var("PODGATE_FUZZ_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256);
    // No persistence file: failures print the minimal input instead.
    TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() })
}

/// Replaces, for each edit, `remove` bytes at a position picked by `at`
/// with `insert`, moving the ends out to character boundaries.
fn apply_text_edits(text: &mut String, edits: Vec<(prop::sample::Index, usize, String)>) {
    for (at, remove, insert) in edits {
        let mut start = at.index(text.len() + 1);
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = (start + remove).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        text.replace_range(start..end, &insert);
    }
}

/// The webhook's fast decoder (`podgate::decode::json`) may refuse anything
/// (serde_json then decides), but what it accepts serde_json must accept too,
/// with an equal result.
fn fast_decoder_agrees_with_serde_json(body: &[u8]) {
    let Ok(text) = std::str::from_utf8(body) else { return };
    if let Ok(fast) = podgate::decode::json::from_str::<review::AdmissionReview<'_>>(text) {
        match review::decode(body) {
            Ok(slow) => assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "decoded differently: {text}"),
            Err(error) => panic!("the fast decoder accepted what serde_json refuses ({error}): {text}"),
        }
        // The object's captured text is serde_json's RawValue of it.
        if let Some(raw) = fast.request.as_ref().and_then(|r| r.object.as_ref()).and_then(|o| o.raw) {
            #[derive(serde::Deserialize)]
            struct Review<'a> {
                #[serde(borrow)]
                request: Request<'a>,
            }
            #[derive(serde::Deserialize)]
            struct Request<'a> {
                #[serde(borrow)]
                object: &'a serde_json::value::RawValue,
            }
            let slow: Review = serde_json::from_str(text).expect("serde_json reads the object raw");
            assert_eq!(raw, slow.request.object.get(), "captured text differs: {text}");
        }
    }
}

/// Decode as the webhook does and evaluate whatever decodes. Returns whether
/// the input was accepted as a review (the server answers the rest with 400).
fn review_through_engine(body: &[u8], policy: &Policy) -> bool {
    fast_decoder_agrees_with_serde_json(body);
    // The webhook's own path (UTF-8 check, fast decoder, dispatch, engine,
    // response encoding) must answer too, with a verdict or an error.
    if let Ok(admission) = podgate::admission::admit(policy, body) {
        let _ = admission.response();
    }
    let Ok(review) = review::decode(body) else { return false };
    let Some(request) = review.request.as_ref() else { return true };
    let (Some(gvk), Some(object)) = (request.kind.as_ref(), request.object.as_ref()) else { return true };
    if let Some(kind) = WorkloadKind::from_group_kind(&gvk.group, &gvk.kind) {
        let subject = Subject {
            namespace: request.namespace.as_deref(),
            username: request.user_info.as_ref().and_then(|u| u.username.as_deref()),
            groups: request.user_info.as_ref().map_or(&[], |u| u.groups.as_slice()),
            name: object.metadata.as_ref().and_then(|m| m.name.as_deref()),
            owner_references: object.metadata.as_ref().map_or(&[], |m| m.owner_references.as_slice()),
            ..Subject::default()
        };
        let verdict = evaluate_object(policy, &subject, kind, object, jiff::Timestamp::UNIX_EPOCH);
        // Exercise the message builders too.
        let _ = verdict.denial_message();
        for warning in verdict.warnings() {
            let _ = warning.warning_text();
        }
    }
    true
}

/// Parse a manifest as `podgate check` does, evaluate every object and
/// look up the line of every finding's field (as the report does).
fn manifest_through_engine(text: &str, syntax: Syntax, policy: &Policy) -> usize {
    let mut documents = 0;
    for_each_document_with_source(text, syntax, |_, source, document| {
        documents += 1;
        let Ok(document) = document else { return };
        let mut locator = Locator::new(source, syntax);
        for found in document.into_objects() {
            let object = &found.object;
            let kind = WorkloadKind::from_api_version_kind(
                object.api_version.as_deref().unwrap_or_default(),
                object.kind.as_deref().unwrap_or_default(),
            );
            if let Some(kind) = kind {
                let subject = Subject::stored(kind, object, None);
                let verdict = evaluate_object(policy, &subject, kind, object, jiff::Timestamp::UNIX_EPOCH);
                let _ = verdict.denial_message();
                let _ = locator.line_of(&found.path);
                // A few per object: the same code for every finding, and
                // each costs a re-parse (the suite stays lean).
                for violation in verdict.violations.iter().take(3) {
                    let _ = locator.line_of(&format!("{}.{}", found.path, violation.finding.field));
                }
            }
        }
    });
    documents
}

/// Values that break naive decoders: wrong types, out-of-range numbers,
/// deep nesting, big collections.
fn hostile_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("JSON numbers are finite", |f| f.is_finite()).prop_map(Value::from),
        Just(Value::from(2_147_483_648_u64)),
        Just(Value::from(-1)),
        Just(Value::from(0)),
        Just(Value::from(0.5)),
        ".{0,40}".prop_map(Value::from),
        Just(Value::from("x".repeat(100_000))),
        Just(Value::from("http")),
        Just(Value::from("Always")),
    ];
    prop_oneof![
        4 => leaf.clone(),
        1 => (1usize..200).prop_map(|depth| (0..depth).fold(Value::Null, |inner, _| Value::Array(vec![inner]))),
        1 => (0usize..2_000).prop_map(|n| Value::Array(vec![serde_json::json!({"name": "c"}); n])),
        1 => leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-zA-Z]{1,12}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        }),
    ]
}

/// Every node of a JSON document, as a JSON pointer.
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                pointers(child, format!("{at}/{}", key.replace('~', "~0").replace('/', "~1")), out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                pointers(child, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

#[test]
fn arbitrary_bytes_never_panic_the_review_decoder() {
    let policy = Policy::default();
    runner()
        .run(&prop::collection::vec(any::<u8>(), 0..4096), |bytes| {
            review_through_engine(&bytes, &policy);
            Ok(())
        })
        .unwrap();
}

/// Waivers naming the fixtures' workloads (the Pod of `pod-create.json`
/// belongs to Deployment `prod/backend`), so that mutated names, owner
/// references and users also go through the waiver matching.
fn waiver_policy() -> Policy {
    Policy::from_yaml(
        "exemptions:\n- name: backend\n  objects: [{namespace: prod, kind: Deployment, name: back*}]\n  expires: 2030-01-01\n  ticket: T-1\n  reason: fuzz\n- name: sidecars\n  namespaces: [prod]\n  containers: [sidecar, migr*]\n  checks: [livenessProbe]\n  effect: audit\n  reason: fuzz\n",
    )
    .unwrap()
}

#[test]
fn mutated_real_reviews_get_a_verdict_or_an_error() {
    let policy = Policy::default();
    let waivers = waiver_policy();
    for name in [
        "reviews/pod-create.json",
        "reviews/deployment-create.json",
        "reviews/pod-update-labels.json",
        "reviews/pod-create-windows-hostprocess.json",
        "reviews/pod-create-user-namespace.json",
    ] {
        let original: Value = serde_json::from_str(&fixture(name)).unwrap();
        let mut paths = Vec::new();
        pointers(&original, String::new(), &mut paths);
        let strategy = (prop::collection::vec((0..paths.len(), hostile_value()), 1..4), any::<bool>());
        runner()
            .run(&strategy, |(mutations, pretty)| {
                let mut mutated = original.clone();
                for (index, replacement) in mutations {
                    if let Some(node) = mutated.pointer_mut(&paths[index]) {
                        *node = replacement;
                    }
                }
                let body =
                    if pretty { serde_json::to_vec_pretty(&mutated) } else { serde_json::to_vec(&mutated) }.unwrap();
                review_through_engine(&body, if pretty { &waivers } else { &policy });
                Ok(())
            })
            .unwrap();
    }
}

#[test]
fn byte_level_mutations_of_real_reviews_never_panic() {
    let policy = Policy::default();
    let original = fixture("reviews/pod-create.json").into_bytes();
    let strategy =
        prop::collection::vec((0..original.len(), 0usize..16, prop::collection::vec(any::<u8>(), 0..16)), 1..8);
    runner()
        .run(&strategy, |edits| {
            let mut body = original.clone();
            for (at, remove, insert) in edits {
                let at = at.min(body.len());
                let end = (at + remove).min(body.len());
                body.splice(at..end, insert);
            }
            review_through_engine(&body, &policy);
            Ok(())
        })
        .unwrap();
}

#[test]
fn json_token_mutations_of_real_reviews_decode_as_serde_json_does() {
    let policy = Policy::default();
    let originals = [
        fixture("reviews/pod-create.json"),
        fixture("reviews/pod-update-labels.json"),
        fixture("reviews/pod-create-user-namespace.json"),
    ];
    // JSON's own edge cases, spliced in anywhere: numbers serde_json reads
    // as floats or refuses, escapes, surrogates, control characters,
    // structure, whitespace.
    let token = prop_oneof![
        Just("-0".to_owned()),
        Just("-0.0".to_owned()),
        Just("1e400".to_owned()),
        Just("01".to_owned()),
        Just("1.".to_owned()),
        Just("1E+5".to_owned()),
        Just("9223372036854775808".to_owned()),
        Just("-9223372036854775809".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just(r#""\ud800""#.to_owned()),
        Just(r#""\udc00\ud800""#.to_owned()),
        Just(r#""\ud83d\ude00""#.to_owned()),
        Just(r#""\u00e9\/\b""#.to_owned()),
        Just(r#"\u12"#.to_owned()),
        Just("\\".to_owned()),
        Just("\"".to_owned()),
        Just("\u{1}".to_owned()),
        Just("\t".to_owned()),
        Just(" \r\n".to_owned()),
        Just(",".to_owned()),
        Just(":".to_owned()),
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        Just("null".to_owned()),
        Just("nul".to_owned()),
        Just("true".to_owned()),
        Just(r#""x":1,"#.to_owned()),
        Just(r#""name":"dup","#.to_owned()),
        "[ -~]{0,6}",
    ];
    let strategy = (0..originals.len(), prop::collection::vec((any::<prop::sample::Index>(), 0usize..4, token), 1..4));
    runner()
        .run(&strategy, |(source, edits)| {
            let mut text = originals[source].clone();
            apply_text_edits(&mut text, edits);
            review_through_engine(text.as_bytes(), &policy);
            Ok(())
        })
        .unwrap();
}

#[test]
fn arbitrary_text_never_panics_the_manifest_parser() {
    let policy = Policy::default();
    runner()
        .run(&(".{0,2000}", any::<bool>()), |(text, json)| {
            manifest_through_engine(&text, if json { Syntax::Json } else { Syntax::Yaml }, &policy);
            Ok(())
        })
        .unwrap();
}

#[test]
fn mutated_real_manifests_never_panic() {
    let policy = Policy::default();
    let sources = [
        fixture("manifests/good/deployment.yaml"),
        fixture("manifests/bad/pod-root.yaml"),
        fixture("manifests/good/batch.yaml"),
        fixture("manifests/good/deployment-user-namespace.yaml"),
    ];
    // Mutations drawn from YAML's own syntax reach deeper than random bytes.
    let token = prop_oneof![
        Just("---\n".to_owned()),
        Just(": ".to_owned()),
        Just("- ".to_owned()),
        Just("&a ".to_owned()),
        Just("*a".to_owned()),
        Just("!!binary ".to_owned()),
        Just("{".to_owned()),
        Just("[".to_owned()),
        Just("\n  ".to_owned()),
        Just("~".to_owned()),
        Just("null".to_owned()),
        Just("<<: *a\n".to_owned()),
        Just("-1".to_owned()),
        Just("9999999999999999999999".to_owned()),
        ".{0,8}",
    ];
    let strategy = (0..sources.len(), prop::collection::vec((any::<prop::sample::Index>(), 0usize..8, token), 1..6));
    runner()
        .run(&strategy, |(source, edits)| {
            let mut text = sources[source].clone();
            apply_text_edits(&mut text, edits);
            manifest_through_engine(&text, Syntax::Yaml, &policy);
            Ok(())
        })
        .unwrap();
}

#[test]
fn known_hostile_manifests_end_in_bounded_time() {
    let policy = Policy::default();
    // Alias expansion bomb ("billion laughs"): the YAML crate refuses it.
    let mut laughs = String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    for level in 1..10 {
        let prev = (b'a' + level - 1) as char;
        let this = (b'a' + level) as char;
        laughs.push_str(&format!(
            "{this}: &{this} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        ));
    }
    laughs.push_str("kind: Pod\napiVersion: v1\nspec: {containers: *j}\n");
    manifest_through_engine(&laughs, Syntax::Yaml, &policy);

    // Deep nesting: refused by the parsers' recursion limits, not a stack overflow.
    manifest_through_engine(&format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)), Syntax::Yaml, &policy);
    manifest_through_engine(&format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)), Syntax::Json, &policy);
    let deep = format!(
        r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u","object":{}{}}}}}"#,
        "{\"a\":".repeat(10_000),
        "}".repeat(10_000)
    );
    assert!(!review_through_engine(deep.as_bytes(), &policy), "nesting 10,000 deep is refused");

    // Many documents and many containers are evaluated, not refused.
    let pods = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c}]}\n---\n".repeat(2_000);
    assert_eq!(manifest_through_engine(&pods, Syntax::Yaml, &policy), 2_000);
    let containers: Vec<Value> = (0..10_000).map(|i| serde_json::json!({"name": format!("c{i}")})).collect();
    let review = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "object": {"apiVersion": "v1", "kind": "Pod", "spec": {"containers": containers}}}
    });
    assert!(review_through_engine(&serde_json::to_vec(&review).unwrap(), &policy));
}
