//! Line numbers for `podgate check`: where a finding's field is in the file.
//!
//! The lean model keeps no positions, and neither YAML nor JSON parsers here
//! expose spans. Both attach the position of the node being read to a custom
//! error raised while reading it, so the document is read once more along the
//! field's path, and the read is stopped with an error exactly at the key the
//! path names: the error's position is the key's line. Only findings pay for
//! this (one extra parse of one document per finding), never passing objects.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::manifest::Syntax;

/// Raised when the probe reaches the end of the path; its position is the answer.
const FOUND: &str = "podgate-locate: found";

/// One step of a field path: `containers` or `[0]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step<'p> {
    Key(&'p str),
    Index(usize),
}

/// Splits `spec.containers[0].securityContext` into its steps; a path read
/// only up to a malformed index (`[x]`) answers with that ancestor's line.
pub fn steps(path: &str) -> Vec<Step<'_>> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, mut indexes) = match part.find('[') {
            Some(at) => (&part[..at], &part[at..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Step::Key(key));
        }
        while let Some(rest) = indexes.strip_prefix('[') {
            let Some(end) = rest.find(']') else { break };
            match rest[..end].parse() {
                Ok(index) => out.push(Step::Index(index)),
                Err(_) => return out,
            }
            indexes = &rest[end + 1..];
        }
    }
    out
}

/// Finds the lines of fields in one document, within a bounded amount of
/// re-parsing: a document with 10,000 containers and as many findings must
/// not take 10,000 parses of itself.
pub struct Locator<'s> {
    source: &'s str,
    syntax: Syntax,
    /// Bytes that may still be re-parsed; when spent, lines are `None`.
    budget: usize,
}

/// Re-parsing allowed per document: 16 MiB, a fraction of a second, and for a
/// document of ordinary size (a few KiB) thousands of findings.
const BUDGET: usize = 16 << 20;

impl<'s> Locator<'s> {
    /// A locator for `source`, a document whose line numbers are the file's.
    pub fn new(source: &'s str, syntax: Syntax) -> Self {
        Locator { source, syntax, budget: BUDGET }
    }

    /// The 1-based line of the field `path` (e.g.
    /// `spec.containers[0].livenessProbe`). A field that is not there gets
    /// the line of its nearest ancestor that is (the container, the
    /// `securityContext` ...), the empty path the object's first line.
    /// `None` when the document cannot be read or the budget is spent.
    pub fn line_of(&mut self, path: &str) -> Option<usize> {
        let steps = steps(path);
        // At most two reads: along the whole path, which ends at the field
        // or says how deep it got, then along the part that exists.
        match self.probe(&steps)? {
            Probed::Found(line) => Some(line),
            Probed::Missing(depth) => match self.probe(&steps[..depth.min(steps.len())])? {
                Probed::Found(line) => Some(line),
                Probed::Missing(_) | Probed::Other => None,
            },
            // Not expected from the reader; try each ancestor in turn.
            Probed::Other => (0..steps.len()).rev().find_map(|depth| match self.probe(&steps[..depth])? {
                Probed::Found(line) => Some(line),
                _ => None,
            }),
        }
    }

    fn probe(&mut self, steps: &[Step<'_>]) -> Option<Probed> {
        self.budget = self.budget.checked_sub(self.source.len())?;
        let probe = Probe { steps, depth: 0 };
        let (message, line) = match self.syntax {
            Syntax::Yaml => {
                let err = probe.deserialize(serde_yaml_ng::Deserializer::from_str(self.source)).err()?;
                (err.to_string(), err.location().map(|l| l.line()))
            }
            Syntax::Json => {
                let err = probe.deserialize(&mut serde_json::Deserializer::from_str(self.source)).err()?;
                (err.to_string(), Some(err.line()).filter(|line| *line > 0))
            }
        };
        if message.contains(FOUND) {
            return line.map(Probed::Found);
        }
        let depth = message.split(MISSING).nth(1).and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next());
        Some(depth.and_then(|d| d.parse().ok()).map_or(Probed::Other, Probed::Missing))
    }
}

/// What one read along a path found.
enum Probed {
    /// Every step exists; the line of the last one.
    Found(usize),
    /// Only the first `n` steps exist.
    Missing(usize),
    /// Some other error.
    Other,
}

/// Raised when a step does not exist, followed by how many steps did.
const MISSING: &str = "podgate-locate: missing after ";

fn missing<E: de::Error>(depth: usize) -> E {
    E::custom(format!("{MISSING}{depth}"))
}

/// Reads a value along `steps` and fails with [`FOUND`] at the last one.
/// Every other outcome (a missing key, a scalar where a mapping should be)
/// is some other error.
struct Probe<'s, 'p> {
    steps: &'s [Step<'p>],
    /// Steps taken so far.
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Probe<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        // Inside deserialize_any, so that the parser stamps its position on
        // the error; the position is that of the node (a mapping's first key).
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Probe<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping or a sequence")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (want, rest) = match self.steps.split_first() {
            None => return Err(de::Error::custom(FOUND)),
            Some((Step::Key(want), rest)) => (*want, rest),
            Some((Step::Index(_), _)) => return Err(missing(self.depth)),
        };
        while let Some(hit) = map.next_key_seed(KeyProbe { want, last: rest.is_empty() })? {
            if hit {
                return map.next_value_seed(Probe { steps: rest, depth: self.depth + 1 });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Err(missing(self.depth))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (index, rest) = match self.steps.split_first() {
            None => return Err(de::Error::custom(FOUND)),
            Some((Step::Index(index), rest)) => (*index, rest),
            Some((Step::Key(_), _)) => return Err(missing(self.depth)),
        };
        for _ in 0..index {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Err(missing(self.depth));
            }
        }
        seq.next_element_seed(Probe { steps: rest, depth: self.depth + 1 })?;
        Err(missing(self.depth))
    }

    // A scalar where the path goes on: the path exists up to here.
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(self.scalar())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(self.scalar())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(self.scalar())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(self.scalar())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(self.scalar())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(self.scalar())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Err(self.scalar())
    }
}

impl Probe<'_, '_> {
    /// At a scalar: found if the path ends here (an index into a list of
    /// strings), else missing below it.
    fn scalar<E: de::Error>(&self) -> E {
        if self.steps.is_empty() {
            E::custom(FOUND)
        } else {
            // The scalar's own key is the deepest step that exists.
            missing(self.depth)
        }
    }
}

/// Reads a mapping key: `Ok(true)` when it is the wanted one, or [`FOUND`]
/// (positioned at the key) when it is also the last step.
struct KeyProbe<'p> {
    want: &'p str,
    last: bool,
}

impl<'de> DeserializeSeed<'de> for KeyProbe<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeyProbe<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        match (key == self.want, self.last) {
            (true, true) => Err(E::custom(FOUND)),
            (hit, _) => Ok(hit),
        }
    }

    // Keys of other types (numbers, booleans, YAML's complex keys) never match.
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "\n\n# a comment\napiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  securityContext: {runAsUser: 0}\n  containers:\n    - name: app\n      image: app:1\n      securityContext:\n        runAsNonRoot: false\n    - name: sidecar\n      image: side:1\n";

    #[test]
    fn finds_keys_items_and_the_nearest_ancestor_of_a_missing_field() {
        let mut locator = Locator::new(POD, Syntax::Yaml);
        let mut line = |path| locator.line_of(path);
        assert_eq!(line(""), Some(4), "the object's first line");
        assert_eq!(line("spec.securityContext.runAsUser"), Some(9), "a key in a flow mapping");
        assert_eq!(line("spec.containers[0].securityContext.runAsNonRoot"), Some(14));
        assert_eq!(line("spec.containers[1]"), Some(15), "an item: its first key");
        assert_eq!(line("spec.containers[1].livenessProbe"), Some(15), "missing: the container");
        assert_eq!(line("spec.containers[1].securityContext.runAsNonRoot"), Some(15));
        assert_eq!(line("spec.containers[0].securityContext.allowPrivilegeEscalation"), Some(13));
        assert_eq!(line("spec.containers[7].livenessProbe"), Some(10), "no such item: the list");
        assert_eq!(line("spec.initContainers[0].livenessProbe"), Some(8));
    }

    #[test]
    fn finds_keys_in_json() {
        let json = "{\n  \"kind\": \"Pod\",\n  \"spec\": {\n    \"containers\": [\n      {\"name\": \"a\",\n       \"securityContext\": {\"privileged\": true}}\n    ]\n  }\n}\n";
        let mut locator = Locator::new(json, Syntax::Json);
        assert_eq!(locator.line_of("spec.containers[0].securityContext.privileged"), Some(6));
        assert_eq!(locator.line_of("spec.containers"), Some(4));
        assert_eq!(locator.line_of("spec.containers[0].livenessProbe"), Some(5), "the item");
        assert_eq!(locator.line_of("spec.containers[0].securityContext.runAsUser"), Some(6));
    }

    #[test]
    fn stops_when_the_budget_is_spent() {
        let mut locator = Locator::new(POD, Syntax::Yaml);
        locator.budget = POD.len() * 3;
        assert_eq!(locator.line_of("spec.containers[1].livenessProbe"), Some(15), "two reads");
        assert_eq!(locator.line_of("spec.containers[0]"), Some(11), "one read");
        assert_eq!(locator.line_of("spec"), None, "spent");
    }

    #[test]
    fn reads_paths() {
        assert_eq!(
            steps("items[2].spec.containers[10].x"),
            [
                Step::Key("items"),
                Step::Index(2),
                Step::Key("spec"),
                Step::Key("containers"),
                Step::Index(10),
                Step::Key("x")
            ]
        );
        assert_eq!(steps(""), []);
    }
}
