//! Listing what is stored in a cluster, page by page, for every workload kind it serves.
//!
//! Each listing asks for at most [`ChunkSize`] objects and follows `metadata.continue` to the
//! end, as `kubectl get --chunk-size` does, so neither the API server nor the audit holds a whole
//! kind at once. Pages are handed on as they arrive, to be judged while the next one is fetched.
//! A listing the API server forbids (403) is a [`Forbidden`] entry of the audit, not an error:
//! an audit of what the caller may read is still worth having.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;

use kube::api::{Api, DynamicObject, ListParams};
use kube::discovery::ApiResource;
use kube::{Client, Error};
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::Instrument as _;

use super::kinds::qualified;

/// Where to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace, one cluster-wide listing per kind.
    AllNamespaces,
    /// These namespaces, one listing per kind and namespace.
    Namespaces(Vec<String>),
}

/// The most objects one page may hold (`limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSize(pub NonZeroU32);

impl ChunkSize {
    /// kubectl's default `--chunk-size`.
    pub const DEFAULT: Self = Self(NonZeroU32::new(500).expect("500 is not zero"));
}

/// Objects of one kind, as stored, with their `apiVersion` and `kind` set (the API server
/// leaves them out of a built-in list's items).
#[derive(Debug)]
pub struct Page {
    /// The kind listed.
    pub resource: Arc<ApiResource>,
    /// The objects.
    pub objects: Vec<Value>,
    /// How many more the API server says the listing holds (`remainingItemCount`), if it says.
    pub remaining: Option<u64>,
}

/// A listing the API server refused (HTTP 403).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Forbidden {
    /// `Kind.group`.
    pub kind: String,
    /// The namespace, or none for a cluster-wide listing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The API server's message.
    pub message: String,
}

/// What a listing yields.
#[derive(Debug)]
pub enum Listed {
    /// A page of objects.
    Page(Page),
    /// A refused listing.
    Forbidden(Forbidden),
}

/// Where a listing looked, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// `Kind.group`.
    pub kind: String,
    /// The namespace, or none for all of them.
    pub namespace: Option<String>,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} in namespace {ns}", self.kind),
            None => write!(f, "{} in all namespaces", self.kind),
        }
    }
}

/// Why listing stopped.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// The API server answered a listing with an error other than 403, or could not be reached.
    #[error("cannot list {place}")]
    List {
        /// What was being listed.
        place: Place,
        /// The client's error.
        #[source]
        source: Error,
    },
    /// An object's metadata could not be turned back into JSON.
    #[error("cannot read an object of {place}")]
    Encode {
        /// What was being listed.
        place: Place,
        /// The serialisation error.
        #[source]
        source: serde_json::Error,
    },
    /// Whoever judges the pages stopped taking them.
    #[error("the judging of listed objects stopped")]
    Closed,
}

/// Lists every kind in `kinds` over `scope` and sends each page (or refusal) to `pages`.
pub async fn list_all(
    client: &Client,
    kinds: &[ApiResource],
    scope: &Scope,
    chunk: ChunkSize,
    pages: &mpsc::Sender<Listed>,
) -> Result<(), ListError> {
    for resource in kinds {
        let resource = Arc::new(resource.clone());
        match scope {
            Scope::AllNamespaces => {
                let api = Api::all_with(client.clone(), resource.as_ref());
                list_one(&api, &resource, None, chunk, pages)
                    .instrument(span(&resource, None))
                    .await?;
            }
            Scope::Namespaces(namespaces) => {
                for ns in namespaces {
                    let api = Api::namespaced_with(client.clone(), ns, resource.as_ref());
                    list_one(&api, &resource, Some(ns), chunk, pages)
                        .instrument(span(&resource, Some(ns)))
                        .await?;
                }
            }
        }
    }
    Ok(())
}

/// The span of one listing.
fn span(resource: &ApiResource, namespace: Option<&str>) -> tracing::Span {
    let kind = qualified(&resource.group, &resource.kind);
    tracing::debug_span!("list", %kind, namespace = namespace.unwrap_or("*"))
}

/// Follows one listing's pages to the end.
async fn list_one(
    api: &Api<DynamicObject>,
    resource: &Arc<ApiResource>,
    namespace: Option<&str>,
    chunk: ChunkSize,
    pages: &mpsc::Sender<Listed>,
) -> Result<(), ListError> {
    let place = Place {
        kind: qualified(&resource.group, &resource.kind),
        namespace: namespace.map(str::to_owned),
    };
    let mut params = ListParams::default().limit(chunk.0.get());
    loop {
        let list = match api.list(&params).await {
            Ok(list) => list,
            Err(Error::Api(status)) if status.is_forbidden() => {
                tracing::warn!(kind = %place.kind, namespace = namespace.unwrap_or("*"), "listing forbidden");
                let forbidden = Forbidden {
                    kind: place.kind,
                    namespace: place.namespace,
                    message: status.message,
                };
                return pages
                    .send(Listed::Forbidden(forbidden))
                    .await
                    .map_err(|_| ListError::Closed);
            }
            Err(source) => return Err(ListError::List { place, source }),
        };
        let next = list.metadata.continue_.filter(|token| !token.is_empty());
        let remaining = list
            .metadata
            .remaining_item_count
            .and_then(|n| u64::try_from(n).ok());
        tracing::debug!(objects = list.items.len(), more = next.is_some(), "page listed");
        let objects = list
            .items
            .into_iter()
            .map(|object| stored_object(object, resource))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| ListError::Encode {
                place: place.clone(),
                source,
            })?;
        let page = Page {
            resource: Arc::clone(resource),
            objects,
            remaining,
        };
        pages
            .send(Listed::Page(page))
            .await
            .map_err(|_| ListError::Closed)?;
        match next {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(()),
        }
    }
}

/// The object as JSON, with the `apiVersion` and `kind` a list's items may lack.
fn stored_object(object: DynamicObject, resource: &ApiResource) -> Result<Value, serde_json::Error> {
    let metadata = serde_json::to_value(&object.metadata)?;
    let mut fields = match object.data {
        Value::Object(fields) => fields,
        _ => serde_json::Map::new(),
    };
    fields.insert("apiVersion".into(), Value::String(resource.api_version.clone()));
    fields.insert("kind".into(), Value::String(resource.kind.clone()));
    fields.insert("metadata".into(), metadata);
    Ok(Value::Object(fields))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn items_get_their_kind_back() {
        let resource = ApiResource {
            group: "apps".into(),
            version: "v1".into(),
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            plural: "deployments".into(),
        };
        // A built-in list's item, as the API server sends it: no apiVersion, no kind.
        let item: DynamicObject = serde_json::from_value(json!({
            "metadata": {"name": "d", "namespace": "ml", "uid": "u1"},
            "spec": {"replicas": 1}
        }))
        .expect("item");
        let object = stored_object(item, &resource).expect("json");
        assert_eq!(
            object,
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": "d", "namespace": "ml", "uid": "u1"}, "spec": {"replicas": 1}})
        );
    }

    #[test]
    fn places_read_as_kubectl_names_them() {
        let place = Place {
            kind: "Deployment.apps".into(),
            namespace: Some("ml".into()),
        };
        assert_eq!(place.to_string(), "Deployment.apps in namespace ml");
        let place = Place {
            namespace: None,
            ..place
        };
        assert_eq!(place.to_string(), "Deployment.apps in all namespaces");
    }
}
