//! Reading manifests as `kubectl apply -f` would: YAML or JSON files, several documents per file,
//! `List` kinds, directories (recursively) and standard input, each object with the file and
//! line it starts at.
//!
//! A document that cannot be read (bad YAML, no kind) is an entry of its own with its location,
//! not an error that stops the rest: one broken file in a chart's output must not hide the verdict
//! on the others.

use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Where a document starts: a file (or `-` for standard input) and a 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The file as given, or `-`.
    pub file: String,
    /// The line the document (or the `List` holding it) starts at.
    pub line: usize,
    /// The item's index, for objects inside a `List`.
    pub item: Option<usize>,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)?;
        if let Some(item) = self.item {
            write!(f, " (item {item})")?;
        }
        Ok(())
    }
}

/// One entry of the input: an object, or why a document is not one.
#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    /// A Kubernetes object.
    Object {
        /// Where it is.
        source: Source,
        /// The object, as JSON.
        object: Value,
    },
    /// A document that could not be read.
    Broken {
        /// Where it is.
        source: Source,
        /// What is wrong.
        problem: String,
    },
}

/// Why an input path could not be read at all (a usage error, unlike a broken document).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The path could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The path.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Nothing to check.
    #[error("no manifest files (.yaml, .yml, .json) under {0}")]
    Empty(String),
}

/// Every document of every input, in order. `-` reads standard input.
pub fn read_inputs(inputs: &[PathBuf]) -> Result<Vec<Document>, InputError> {
    let mut documents = Vec::new();
    for input in inputs {
        if input.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|source| InputError::Read {
                    path: "-".to_owned(),
                    source,
                })?;
            documents.extend(parse("-", &text));
            continue;
        }
        let files = files_under(input)?;
        if files.is_empty() {
            return Err(InputError::Empty(input.display().to_string()));
        }
        for file in files {
            let shown = file.display().to_string();
            let text = std::fs::read_to_string(&file).map_err(|source| InputError::Read {
                path: shown.clone(),
                source,
            })?;
            documents.extend(parse(&shown, &text));
        }
    }
    Ok(documents)
}

/// `path` itself when it is a file; the manifest files below it, sorted, when a directory.
fn files_under(path: &Path) -> Result<Vec<PathBuf>, InputError> {
    let read_error = |source| InputError::Read {
        path: path.display().to_string(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_error)?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(read_error)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(read_error)?;
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            files.extend(files_under(&entry)?);
        } else if entry
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        {
            files.push(entry);
        }
    }
    Ok(files)
}

/// The documents of one file's text (YAML, of which JSON is a subset).
pub fn parse(file: &str, text: &str) -> Vec<Document> {
    let mut documents = Vec::new();
    for (line, chunk) in split_documents(text) {
        let source = Source {
            file: file.to_owned(),
            line,
            item: None,
        };
        let value: Value = match serde_yaml_ng::from_str(&chunk) {
            Ok(v) => v,
            Err(e) => {
                let at = e.location().map_or(line, |l| line + l.line() - 1);
                let problem = e.to_string();
                // serde_yaml_ng appends "at line L column C" relative to the chunk: drop it.
                let problem = problem.split(" at line ").next().unwrap_or(&problem).to_owned();
                documents.push(Document::Broken {
                    source,
                    problem: format!("invalid YAML at line {at}: {problem}"),
                });
                continue;
            }
        };
        match value {
            Value::Null => {}
            Value::Object(ref fields) if is_list(fields) => {
                let items = fields
                    .get("items")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for (index, item) in items.into_iter().enumerate() {
                    let source = Source {
                        item: Some(index),
                        ..source.clone()
                    };
                    documents.push(object(source, item));
                }
            }
            other => documents.push(object(source, other)),
        }
    }
    documents
}

fn is_list(fields: &serde_json::Map<String, Value>) -> bool {
    fields
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k.ends_with("List"))
        && fields.get("items").is_some_and(Value::is_array)
}

fn object(source: Source, value: Value) -> Document {
    let problem = match &value {
        Value::Object(fields) => match (fields.get("apiVersion"), fields.get("kind")) {
            (Some(Value::String(a)), Some(Value::String(k))) if !a.is_empty() && !k.is_empty() => None,
            (_, None | Some(Value::Null)) => Some("the document has no kind"),
            (None | Some(Value::Null), _) => Some("the document has no apiVersion"),
            _ => Some("apiVersion and kind must be non-empty strings"),
        },
        _ => Some("the document is not a mapping (a Kubernetes object)"),
    };
    match problem {
        None => Document::Object {
            source,
            object: value,
        },
        Some(p) => Document::Broken {
            source,
            problem: p.to_owned(),
        },
    }
}

/// Splits YAML text at `---` document markers, giving each document's first line (1-based).
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut documents = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (index, line) in text.lines().enumerate() {
        let is_marker = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        if is_marker {
            if !current.trim().is_empty() {
                documents.push((start, std::mem::take(&mut current)));
            }
            current.clear();
            start = index + 2;
            // Content on the marker line itself (`--- {a: 1}`) belongs to the new document.
            let rest = line[3..].trim();
            if !rest.is_empty() && !rest.starts_with('#') {
                current.push_str(rest);
                current.push('\n');
                start = index + 1;
            }
            continue;
        }
        // Blank and comment lines before a document's content do not move its start.
        if current.is_empty() && (line.trim().is_empty() || line.trim_start().starts_with('#')) {
            start = index + 2;
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    if !current.trim().is_empty() {
        documents.push((start, current));
    }
    documents
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn lines(docs: &[Document]) -> Vec<String> {
        docs.iter()
            .map(|d| match d {
                Document::Object { source, object } => {
                    format!("{source} {}", object["kind"].as_str().unwrap_or("?"))
                }
                Document::Broken { source, problem } => format!("{source} ! {problem}"),
            })
            .collect()
    }

    #[test]
    fn documents_lists_and_errors_keep_their_lines() {
        let text = "\
# a chart's output
apiVersion: v1
kind: Pod
metadata: {name: a}
---
apiVersion: v1
kind: List
items:
  - {apiVersion: v1, kind: ConfigMap, metadata: {name: c}}
  - {apiVersion: apps/v1, kind: Deployment, metadata: {name: d}}
---
metadata: {name: nokind}
apiVersion: v1
---
kind: Pod
metadata: [unclosed
---
--- {apiVersion: v1, kind: Service, metadata: {name: s}}
";
        assert_eq!(
            lines(&parse("all.yaml", text)),
            [
                "all.yaml:2 Pod",
                "all.yaml:6 (item 0) ConfigMap",
                "all.yaml:6 (item 1) Deployment",
                "all.yaml:12 ! the document has no kind",
                "all.yaml:15 ! invalid YAML at line 17: did not find expected ',' or ']'",
                "all.yaml:18 Service",
            ]
        );
    }

    #[test]
    fn json_is_yaml() {
        let docs = parse(
            "p.json",
            r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}"#,
        );
        assert_eq!(
            docs,
            [Document::Object {
                source: Source {
                    file: "p.json".into(),
                    line: 1,
                    item: None
                },
                object: json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}})
            }]
        );
        assert_eq!(
            lines(&parse("x.yaml", "- 1\n- 2\n")),
            ["x.yaml:1 ! the document is not a mapping (a Kubernetes object)"]
        );
    }

    #[test]
    fn directories_are_read_recursively_in_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("b")).expect("mkdir");
        std::fs::write(dir.path().join("b/x.yml"), "apiVersion: v1\nkind: Pod\n").expect("write");
        std::fs::write(
            dir.path().join("a.json"),
            r#"{"apiVersion":"v1","kind":"Service"}"#,
        )
        .expect("write");
        std::fs::write(dir.path().join("notes.txt"), "not a manifest").expect("write");
        let docs = read_inputs(&[dir.path().to_path_buf()]).expect("readable");
        let kinds: Vec<_> = lines(&docs)
            .into_iter()
            .map(|l| l.rsplit(' ').next().unwrap_or("").to_owned())
            .collect();
        assert_eq!(kinds, ["Service", "Pod"]);
        let empty = tempfile::tempdir().expect("temp dir");
        assert!(matches!(
            read_inputs(&[empty.path().to_path_buf()]),
            Err(InputError::Empty(_))
        ));
        assert!(matches!(
            read_inputs(&[dir.path().join("missing.yaml")]),
            Err(InputError::Read { .. })
        ));
    }
}
