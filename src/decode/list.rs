//! Decodes one page of a Kubernetes list response (`GET /api/v1/pods?limit=N`)
//! into the lean model, for `podgate audit`. Items are decoded with the same
//! [`Object`] model as the webhook's, borrowed from the page's text; every
//! field the checks do not read (status, managedFields, env ...) is skipped.

use serde::Deserialize;

use super::model::{nullable_vec, Object, Text};

/// A `*List` response: its items and the token of the next page.
#[derive(Debug, Default, Deserialize)]
pub struct ListPage<'a> {
    #[serde(borrow, default)]
    pub metadata: Option<ListMeta<'a>>,
    /// List items carry no `apiVersion` or `kind`: the request says what they are.
    #[serde(borrow, default, deserialize_with = "nullable_vec")]
    pub items: Vec<Object<'a>>,
}

/// `metadata` of a list.
#[derive(Debug, Default, Deserialize)]
pub struct ListMeta<'a> {
    /// Empty or absent on the last page.
    #[serde(borrow, default, rename = "continue")]
    pub continue_token: Option<Text<'a>>,
}

impl<'a> ListPage<'a> {
    /// The token to fetch the next page with, `None` on the last page.
    pub fn next(&self) -> Option<&str> {
        self.metadata.as_ref().and_then(|m| m.continue_token.as_deref()).filter(|token| !token.is_empty())
    }
}

/// Decodes a page with the fast strict reader of [`super::json`]; what it
/// refuses is decoded by serde_json, whose error is then the answer.
pub fn decode_page(text: &str) -> Result<ListPage<'_>, serde_json::Error> {
    match super::json::from_str(text) {
        Ok(page) => Ok(page),
        Err(super::json::Refused) => serde_json::from_str(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_items_owners_and_the_continue_token() {
        let text = r#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"9","continue":"abc"},
            "items":[{"metadata":{"name":"web-1","namespace":"shop","uid":"u1","ownerReferences":[
              {"apiVersion":"apps/v1","kind":"ReplicaSet","name":"web-7f","uid":"rs1","controller":true,"blockOwnerDeletion":true}]},
              "spec":{"containers":[{"name":"app"}]},"status":{"phase":"Pending"}}]}"#;
        let page = decode_page(text).unwrap();
        assert_eq!(page.next(), Some("abc"));
        let meta = page.items[0].metadata.as_ref().unwrap();
        assert_eq!(meta.uid.as_deref(), Some("u1"));
        let owner = meta.controller().unwrap();
        assert_eq!((&*owner.kind, &*owner.name, &*owner.uid), ("ReplicaSet", "web-7f", "rs1"));
        assert_eq!(page.items[0].spec.as_ref().unwrap().pod.containers[0].name.0, "app");
    }

    #[test]
    fn last_page_and_errors() {
        let page = decode_page(r#"{"metadata":{"continue":""},"items":null}"#).unwrap();
        assert_eq!(page.next(), None);
        assert!(page.items.is_empty());
        let error = decode_page(r#"{"items":[{"metadata":{"uid":7}}]}"#).unwrap_err();
        assert!(error.to_string().contains("invalid type"), "{error}");
    }
}
