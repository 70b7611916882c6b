//! What a module is, before anyone runs it: its size, imports and exports, the transport the
//! engine would pick for it, and whether it compiles and links. `portcullis policy inspect`
//! prints this; it is how a policy author sees why a module is refused.

use std::fmt;
use std::time::{Duration, Instant};

use wasmtime::component::Component;
use wasmtime::component::types::ComponentItem;
use wasmtime::{ExternType, Module};

use super::Engine;
use super::abi::{Transport, component};

/// One import or export, with its type as wasmtime prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// `module::name` for imports, `name` for exports.
    pub name: String,
    /// `func (param i32) (result i64)`, `memory`, ...
    pub ty: String,
}

/// Everything `inspect` found.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The module's size in bytes.
    pub size: usize,
    /// How long compiling took (only when it compiled).
    pub compile_time: Option<Duration>,
    /// Why it does not compile, when it does not.
    pub compile_error: Option<String>,
    /// Its imports.
    pub imports: Vec<Item>,
    /// Its exports.
    pub exports: Vec<Item>,
    /// The transport detected from its exports, or why none fits.
    pub transport: Result<Transport, String>,
    /// Whether the engine can link its imports, or why not.
    pub links: Result<(), String>,
}

impl Inspection {
    /// Whether the module would load as a policy.
    pub fn loads(&self) -> bool {
        self.compile_error.is_none() && self.transport.is_ok() && self.links.is_ok()
    }
}

fn describe(ty: &ExternType) -> String {
    match ty {
        ExternType::Func(f) => format!("func {f}"),
        ExternType::Memory(m) => format!("memory {} pages min", m.minimum()),
        ExternType::Global(g) => format!("global {}", g.content()),
        ExternType::Table(t) => format!("table {} min", t.minimum()),
        ExternType::Tag(_) => "tag".to_owned(),
    }
}

impl Inspection {
    /// What is known of `bytes` (a `what`: module or component) that did not compile.
    fn uncompiled(bytes: &[u8], error: String, what: &str) -> Self {
        let consequence = format!("the {what} does not compile");
        Self {
            size: bytes.len(),
            compile_time: None,
            compile_error: Some(error),
            imports: Vec::new(),
            exports: Vec::new(),
            transport: Err(consequence.clone()),
            links: Err(consequence),
        }
    }
}

impl Engine {
    /// Compiles `bytes` and reports what the module is, never failing: every problem is part of
    /// the answer.
    pub fn inspect(&self, bytes: &[u8]) -> Inspection {
        if super::is_component(bytes) {
            return self.inspect_component(bytes);
        }
        let started = Instant::now();
        let module = match Module::from_binary(&self.wasm, bytes) {
            Ok(m) => m,
            Err(e) => return Inspection::uncompiled(bytes, format!("{e:#}"), "module"),
        };
        let compile_time = started.elapsed();
        let imports = module
            .imports()
            .map(|i| Item {
                name: format!("{}::{}", i.module(), i.name()),
                ty: describe(&i.ty()),
            })
            .collect();
        let exports = module
            .exports()
            .map(|e| Item {
                name: e.name().to_owned(),
                ty: describe(&e.ty()),
            })
            .collect();
        let links = self
            .linker
            .instantiate_pre(&module)
            .map(|_| ())
            .map_err(|e| format!("{e:#}"));
        Inspection {
            size: bytes.len(),
            compile_time: Some(compile_time),
            compile_error: None,
            imports,
            exports,
            transport: Transport::detect(&module),
            links,
        }
    }
}

impl Engine {
    /// [`Engine::inspect`] for a component: its imports and exports are the component's own
    /// (WIT interfaces and functions), not those of the core modules inside.
    fn inspect_component(&self, bytes: &[u8]) -> Inspection {
        let started = Instant::now();
        let component = match Component::from_binary(&self.wasm, bytes) {
            Ok(c) => c,
            Err(e) => return Inspection::uncompiled(bytes, format!("{e:#}"), "component"),
        };
        let compile_time = started.elapsed();
        let ty = component.component_type();
        let items = |list: &mut dyn Iterator<Item = (&str, ComponentItem)>| {
            list.map(|(name, item)| Item {
                name: name.to_owned(),
                ty: describe_component(&item),
            })
            .collect()
        };
        let imports = items(&mut ty.imports(&self.wasm).map(|(n, e)| (n, e.ty)));
        let exports = items(&mut ty.exports(&self.wasm).map(|(n, e)| (n, e.ty)));
        let links = self
            .components
            .instantiate_pre(&component)
            .map(|_| ())
            .map_err(|e| format!("{e:#}"));
        Inspection {
            size: bytes.len(),
            compile_time: Some(compile_time),
            compile_error: None,
            imports,
            exports,
            transport: component::detect(&component, &self.wasm),
            links,
        }
    }
}

fn describe_component(item: &ComponentItem) -> String {
    match item {
        ComponentItem::ComponentFunc(f) => {
            let params: Vec<String> = f.params().map(|(n, t)| format!("{n}: {t:?}")).collect();
            let results: Vec<String> = f.results().map(|t| format!("{t:?}")).collect();
            format!("func({}) -> ({})", params.join(", "), results.join(", "))
        }
        ComponentItem::ComponentInstance(_) => "instance".to_owned(),
        ComponentItem::Component(_) => "component".to_owned(),
        ComponentItem::Module(_) => "core module".to_owned(),
        ComponentItem::CoreFunc(f) => format!("core func {f}"),
        ComponentItem::Type(_) => "type".to_owned(),
        ComponentItem::Resource(_) => "resource".to_owned(),
    }
}

impl fmt::Display for Inspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "size:      {} bytes", self.size)?;
        match (&self.compile_error, self.compile_time) {
            (Some(e), _) => writeln!(f, "compiles:  no: {e}")?,
            (None, Some(t)) => writeln!(f, "compiles:  yes, in {} ms", t.as_millis())?,
            (None, None) => writeln!(f, "compiles:  yes")?,
        }
        match &self.transport {
            Ok(t) => writeln!(f, "transport: {t}")?,
            Err(e) => writeln!(f, "transport: none: {e}")?,
        }
        match &self.links {
            Ok(()) => writeln!(f, "links:     yes")?,
            Err(e) => writeln!(f, "links:     no: {e}")?,
        }
        writeln!(f, "imports:   {}", self.imports.len())?;
        for i in &self.imports {
            writeln!(f, "  {:<40} {}", i.name, i.ty)?;
        }
        writeln!(f, "exports:   {}", self.exports.len())?;
        for e in &self.exports {
            writeln!(f, "  {:<40} {}", e.name, e.ty)?;
        }
        writeln!(
            f,
            "loads as a policy: {}",
            if self.loads() { "yes" } else { "no" }
        )
    }
}
