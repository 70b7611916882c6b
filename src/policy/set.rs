//! The live set of policies: every configured policy compiled, linked and with its settings
//! accepted by the policy itself.
//!
//! A `PolicySet` is immutable. The server holds it behind one `Arc` that is swapped whole, so a
//! review that started on one set finishes on it even if a new set is installed meanwhile
//! (`reload::policies` installs new sets that way).

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;

use crate::engine::abi::Abi;
use crate::engine::limits::Limits;
use crate::engine::{CompiledModule, Engine, EngineError, Export};
use crate::metrics::{Metrics, PolicyMeter};
use crate::policy::spec::{PolicyKind, PolicySpec};
use crate::policy::verdict::Fault;

/// A policy ready to run.
#[derive(Debug)]
pub struct LoadedPolicy {
    /// Its validated configuration.
    pub spec: PolicySpec,
    /// Its module, compiled once.
    pub module: CompiledModule,
    /// Its metric handles, made with the set.
    pub meter: PolicyMeter,
}

impl LoadedPolicy {
    /// The bounds of one evaluation of this policy.
    pub fn limits(&self) -> Limits {
        Limits {
            timeout: self.spec.timeout.duration(),
            memory_bytes: self.spec.memory.bytes(),
        }
    }
}

/// Why a policy set could not be built. Each names the configuration, the policy and the
/// problem, like the configuration's own errors.
#[derive(Debug, thiserror::Error)]
pub enum PolicySetError {
    /// The module does not compile, link or implement the ABI.
    #[error("{file}: policy `{policy}`: module {module}: {source}")]
    Module {
        /// The configuration.
        file: String,
        /// The policy.
        policy: String,
        /// The module's origin.
        module: String,
        /// What the engine said.
        #[source]
        source: EngineError,
    },
    /// The policy refused its settings.
    #[error("{file}: policy `{policy}`: settings rejected by the policy: {message}")]
    SettingsRejected {
        /// The configuration.
        file: String,
        /// The policy.
        policy: String,
        /// The policy's reason.
        message: String,
    },
    /// `validate_settings` itself failed.
    #[error("{file}: policy `{policy}`: validate_settings failed: {fault}")]
    SettingsFault {
        /// The configuration.
        file: String,
        /// The policy.
        policy: String,
        /// The fault.
        fault: Fault,
    },
}

/// The output of ABI v1 `validate_settings`.
#[derive(Deserialize)]
struct SettingsVerdict {
    valid: bool,
    #[serde(default)]
    message: Option<String>,
}

/// An immutable, ready set of policies in configuration order.
#[derive(Debug, Default)]
pub struct PolicySet {
    policies: Vec<Arc<LoadedPolicy>>,
}

impl PolicySet {
    /// A set with no policies: every review is allowed unchanged.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Compiles every policy of `specs`, read from the configuration `origin` (a module used
    /// by several policies is compiled once), and has each validate its settings. Blocking and
    /// CPU-heavy: call it at start-up or from a blocking thread.
    ///
    /// The policies' meters are registered nowhere: what `check` and `audit` run.
    pub fn load(engine: &Engine, origin: &str, specs: &[PolicySpec]) -> Result<Self, PolicySetError> {
        Self::load_with(engine, origin, specs, &Self::empty(), |_| PolicyMeter::detached())
    }

    /// [`PolicySet::load`] for `serve`: each policy's meter registered in `metrics`, and the
    /// compiled module of `previous` (a set `engine` built) taken for every module whose bytes
    /// are unchanged, so a reload that changes settings, modes or matching compiles nothing.
    /// Settings are validated again all the same.
    pub fn load_after(
        engine: &Engine,
        origin: &str,
        specs: &[PolicySpec],
        previous: &PolicySet,
        metrics: &Metrics,
    ) -> Result<Self, PolicySetError> {
        Self::load_with(engine, origin, specs, previous, |spec| {
            metrics.policy_meter(spec.name.as_str(), spec.mode)
        })
    }

    fn load_with(
        engine: &Engine,
        origin: &str,
        specs: &[PolicySpec],
        previous: &PolicySet,
        meter: impl Fn(&PolicySpec) -> PolicyMeter,
    ) -> Result<Self, PolicySetError> {
        let mut compiled: HashMap<(Arc<[u8]>, Option<Abi>), CompiledModule> = previous
            .iter()
            .map(|p| ((Arc::clone(&p.spec.module.bytes), p.spec.abi), p.module.clone()))
            .collect();
        let mut policies = Vec::with_capacity(specs.len());
        for spec in specs {
            let key = (Arc::clone(&spec.module.bytes), spec.abi);
            let module = match compiled.get(&key) {
                Some(m) => m.clone(),
                None => {
                    let m = engine
                        .compile_as(&spec.module.bytes, spec.abi)
                        .map_err(|source| PolicySetError::Module {
                            file: origin.to_owned(),
                            policy: spec.name.to_string(),
                            module: spec.module.origin.clone(),
                            source,
                        })?;
                    compiled.insert(key, m.clone());
                    m
                }
            };
            let policy = LoadedPolicy {
                spec: spec.clone(),
                module,
                meter: meter(spec),
            };
            check_settings(&policy, origin)?;
            policies.push(Arc::new(policy));
        }
        Ok(Self { policies })
    }

    /// Every policy, in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<LoadedPolicy>> {
        self.policies.iter()
    }

    /// The policies of one kind, in configuration order.
    pub fn of_kind(&self, kind: PolicyKind) -> impl Iterator<Item = &Arc<LoadedPolicy>> {
        self.policies.iter().filter(move |p| p.spec.kind == kind)
    }

    /// The policy called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<LoadedPolicy>> {
        self.policies.iter().find(|p| p.spec.name.as_str() == name)
    }

    /// How many policies the set holds.
    pub fn len(&self) -> usize {
        self.policies.len()
    }

    /// Whether the set holds no policy.
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }
}

fn check_settings(policy: &LoadedPolicy, file: &str) -> Result<(), PolicySetError> {
    if !policy.module.validates_settings() {
        return Ok(());
    }
    let fault = |fault| PolicySetError::SettingsFault {
        file: file.to_owned(),
        policy: policy.spec.name.to_string(),
        fault,
    };
    let output = policy
        .module
        .call(
            Export::ValidateSettings,
            policy.spec.settings.json().as_bytes(),
            policy.limits(),
        )
        .map_err(|e| fault(Fault::Call(e)))?;
    let verdict: SettingsVerdict =
        serde_json::from_slice(&output.bytes).map_err(|e| fault(Fault::InvalidOutput(e.to_string())))?;
    if verdict.valid {
        return Ok(());
    }
    Err(PolicySetError::SettingsRejected {
        file: file.to_owned(),
        policy: policy.spec.name.to_string(),
        message: verdict.message.unwrap_or_else(|| "no reason given".to_owned()),
    })
}
