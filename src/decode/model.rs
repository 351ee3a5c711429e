//! The lean pod model: only the fields podgate's checks read, borrowed from
//! the input where possible.
//!
//! Everything else in a submitted object (managedFields, env, volumes, status
//! ...) is skipped by the parser without being materialised, which is what
//! keeps a 9 KB review in the microsecond range. Unknown fields are ignored,
//! as the apiserver may add new ones at any time.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

/// A string borrowed from the input when it holds no escape sequences.
///
/// serde only borrows a `Cow<str>` that is a field marked `borrow` itself, not
/// one inside an `Option` or `Vec`; this newtype carries the mark along.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
pub struct Text<'a>(#[serde(borrow)] pub Cow<'a, str>);

impl Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `null` decodes as an empty list, as the apiserver treats it.
pub(crate) fn nullable_vec<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

/// `metadata`: only what identifies the object in messages and exemptions,
/// and (for `podgate audit`) what links a Pod to the workload that made it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta<'a> {
    #[serde(borrow, default)]
    pub name: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub generate_name: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub namespace: Option<Text<'a>>,
    /// The object's unique id; owner references point at it.
    #[serde(borrow, default)]
    pub uid: Option<Text<'a>>,
    /// Who owns the object: for exemptions naming its workload, and for
    /// `podgate audit` to fold Pods under their workload. Borrowed strings
    /// and a flag per entry (`blockOwnerDeletion` is skipped); controllers
    /// set exactly one.
    #[serde(borrow, default, deserialize_with = "nullable_vec")]
    pub owner_references: Vec<OwnerReference<'a>>,
}

impl<'a> ObjectMeta<'a> {
    /// The owner reference marked `controller: true` (at most one per the API).
    pub fn controller(&self) -> Option<&OwnerReference<'a>> {
        self.owner_references.iter().find(|owner| owner.controller == Some(true))
    }
}

/// One entry of `metadata.ownerReferences`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerReference<'a> {
    #[serde(borrow, default)]
    pub api_version: Text<'a>,
    #[serde(borrow, default)]
    pub kind: Text<'a>,
    #[serde(borrow, default)]
    pub name: Text<'a>,
    #[serde(borrow, default)]
    pub uid: Text<'a>,
    /// `true` on the reference to the managing controller.
    #[serde(default)]
    pub controller: Option<bool>,
}

/// A submitted Kubernetes object of any kind.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Object<'a> {
    #[serde(borrow, default)]
    pub api_version: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub kind: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub metadata: Option<ObjectMeta<'a>>,
    #[serde(borrow, default)]
    pub spec: Option<ObjectSpec<'a>>,
}

/// The `spec` of any supported object, decoded in one pass whatever the kind:
/// a Pod's own fields land in `pod`, a workload's pod template in `template`,
/// a CronJob's in `job_template`. `extract` picks the one that the kind uses.
#[derive(Debug, Default)]
pub struct ObjectSpec<'a> {
    pub pod: PodSpec<'a>,
    pub template: Option<PodTemplate<'a>>,
    pub job_template: Option<JobTemplate<'a>>,
}

/// `spec.template` of Deployment, ReplicaSet, StatefulSet, DaemonSet, Job and
/// ReplicationController.
#[derive(Debug, Default, Deserialize)]
pub struct PodTemplate<'a> {
    #[serde(borrow, default)]
    pub spec: Option<PodSpec<'a>>,
}

/// `spec.jobTemplate` of a CronJob.
#[derive(Debug, Default, Deserialize)]
pub struct JobTemplate<'a> {
    #[serde(borrow, default)]
    pub spec: Option<JobSpec<'a>>,
}

/// `spec.jobTemplate.spec` of a CronJob.
#[derive(Debug, Default, Deserialize)]
pub struct JobSpec<'a> {
    #[serde(borrow, default)]
    pub template: Option<PodTemplate<'a>>,
}

/// A pod spec: the containers and the pod-level settings they inherit.
#[derive(Debug, Default)]
pub struct PodSpec<'a> {
    pub containers: Vec<Container<'a>>,
    pub init_containers: Vec<Container<'a>>,
    pub ephemeral_containers: Vec<Container<'a>>,
    pub security_context: Option<PodSecurityContext>,
    pub restart_policy: Option<Text<'a>>,
    /// `spec.os`: which operating system the pod runs on. Without it a pod
    /// is judged as a Linux pod, as Pod Security Admission does.
    pub os: Option<PodOs<'a>>,
    /// `spec.hostUsers`: `false` runs the pod in its own user namespace
    /// (its UID 0 is an unprivileged UID on the host); unset or `true`
    /// shares the host's.
    pub host_users: Option<bool>,
}

impl PodSpec<'_> {
    /// `spec.os.name: windows`: Linux-only security fields cannot be set
    /// (the API refuses them), so the checks judge their Windows
    /// counterparts instead.
    pub fn is_windows(&self) -> bool {
        self.os.as_ref().and_then(|os| os.name.as_deref()) == Some("windows")
    }

    /// `spec.hostUsers: false`, set explicitly: a user-namespaced pod. Pod
    /// Security Admission's own test (`relaxPolicyForUserNamespacePod`,
    /// pod-security-admission `policy/helpers.go`): an unset `hostUsers`
    /// means the host's user namespace.
    pub fn user_namespaced(&self) -> bool {
        self.host_users == Some(false)
    }
}

/// `spec.os`.
#[derive(Debug, Default, Deserialize)]
pub struct PodOs<'a> {
    #[serde(borrow, default)]
    pub name: Option<Text<'a>>,
}

impl<'a> PodSpec<'a> {
    /// Decodes the value of `key` if it is a pod spec field; skips it otherwise.
    /// Shared by `PodSpec` and `ObjectSpec`, whose Pod fields sit at the top.
    /// A repeated field is an error, as in every derived struct of the model:
    /// an object with two `containers` lists has no single meaning to judge.
    fn decode_field<'de: 'a, A: MapAccess<'de>>(
        &mut self,
        key: &str,
        seen: &mut SeenFields,
        map: &mut A,
    ) -> Result<(), A::Error> {
        const FIELDS: [&str; 7] = [
            "containers",
            "initContainers",
            "ephemeralContainers",
            "securityContext",
            "restartPolicy",
            "os",
            "hostUsers",
        ];
        let Some(index) = FIELDS.iter().position(|field| *field == key) else {
            map.next_value::<IgnoredAny>()?;
            return Ok(());
        };
        seen.first_time::<A::Error>(index, FIELDS[index])?;
        match index {
            0 => self.containers = map.next_value::<Containers<'a>>()?.0,
            1 => self.init_containers = map.next_value::<Containers<'a>>()?.0,
            2 => self.ephemeral_containers = map.next_value::<Containers<'a>>()?.0,
            3 => self.security_context = map.next_value()?,
            4 => self.restart_policy = map.next_value()?,
            5 => self.os = map.next_value()?,
            _ => self.host_users = map.next_value()?,
        }
        Ok(())
    }
}

/// Which fields a hand-written visitor has seen, to reject duplicates.
#[derive(Default)]
struct SeenFields(u32);

impl SeenFields {
    fn first_time<E: serde::de::Error>(&mut self, index: usize, name: &'static str) -> Result<(), E> {
        let bit = 1 << index;
        if self.0 & bit != 0 {
            return Err(E::duplicate_field(name));
        }
        self.0 |= bit;
        Ok(())
    }
}

/// A map key, borrowed when the input allows it.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Text::deserialize(deserializer).map(|text| Key(text.0))
    }
}

#[derive(Deserialize)]
struct Containers<'a>(#[serde(borrow, deserialize_with = "nullable_vec")] Vec<Container<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for PodSpec<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PodSpecVisitor<'a>(PhantomData<PodSpec<'a>>);
        impl<'de: 'a, 'a> Visitor<'de> for PodSpecVisitor<'a> {
            type Value = PodSpec<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a pod spec object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut spec = PodSpec::default();
                let mut seen = SeenFields::default();
                while let Some(key) = map.next_key::<Key<'de>>()? {
                    spec.decode_field(&key.0, &mut seen, &mut map)?;
                }
                Ok(spec)
            }
        }
        deserializer.deserialize_map(PodSpecVisitor(PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for ObjectSpec<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectSpecVisitor<'a>(PhantomData<ObjectSpec<'a>>);
        impl<'de: 'a, 'a> Visitor<'de> for ObjectSpecVisitor<'a> {
            type Value = ObjectSpec<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object spec")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut spec = ObjectSpec::default();
                let mut seen = SeenFields::default();
                while let Some(key) = map.next_key::<Key<'de>>()? {
                    match &*key.0 {
                        // Bits 0..7 belong to the pod spec fields.
                        "template" => {
                            seen.first_time::<A::Error>(8, "template")?;
                            spec.template = map.next_value()?
                        }
                        "jobTemplate" => {
                            seen.first_time::<A::Error>(9, "jobTemplate")?;
                            spec.job_template = map.next_value()?
                        }
                        other => spec.pod.decode_field(other, &mut seen, &mut map)?,
                    }
                }
                Ok(spec)
            }
        }
        deserializer.deserialize_map(ObjectSpecVisitor(PhantomData))
    }
}

/// `spec.securityContext`: the pod-level defaults containers inherit.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSecurityContext {
    #[serde(default)]
    pub run_as_non_root: Option<bool>,
    #[serde(default)]
    pub run_as_user: Option<i64>,
    #[serde(default)]
    pub windows_options: Option<Box<WindowsOptions>>,
}

/// `securityContext.windowsOptions`, read only for pods with
/// `spec.os.name: windows`. Boxed: absent on almost every pod, so it costs
/// a pointer there.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowsOptions {
    /// A HostProcess container: Windows' privileged container, with the
    /// node's network, processes and file system.
    #[serde(default)]
    pub host_process: Option<bool>,
    /// The Windows user the entrypoint runs as.
    #[serde(default)]
    pub run_as_user_name: Option<String>,
}

/// A container of any kind: regular, init or ephemeral.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container<'a> {
    #[serde(borrow, default)]
    pub name: Text<'a>,
    #[serde(borrow, default, deserialize_with = "nullable_vec")]
    pub ports: Vec<ContainerPort<'a>>,
    #[serde(default)]
    pub security_context: Option<SecurityContext>,
    // Probes are boxed: inline, the three made a container 960 bytes,
    // copied whole each time the decoder moved one (into its Vec, out of a
    // Result); boxed, a container is 120 bytes.
    #[serde(borrow, default)]
    pub liveness_probe: Option<Box<Probe<'a>>>,
    #[serde(borrow, default)]
    pub readiness_probe: Option<Box<Probe<'a>>>,
    #[serde(borrow, default)]
    pub startup_probe: Option<Box<Probe<'a>>>,
    /// `Always` on an init container makes it a sidecar.
    #[serde(borrow, default)]
    pub restart_policy: Option<Text<'a>>,
}

/// One entry of a container's `ports`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort<'a> {
    #[serde(borrow, default)]
    pub name: Option<Text<'a>>,
    #[serde(default)]
    pub container_port: Option<i64>,
}

/// A container's `securityContext`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityContext {
    #[serde(default)]
    pub run_as_non_root: Option<bool>,
    #[serde(default)]
    pub run_as_user: Option<i64>,
    #[serde(default)]
    pub allow_privilege_escalation: Option<bool>,
    #[serde(default)]
    pub privileged: Option<bool>,
    #[serde(default)]
    pub windows_options: Option<Box<WindowsOptions>>,
}

/// A liveness, readiness or startup probe.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Probe<'a> {
    #[serde(borrow, default)]
    pub exec: Option<ExecAction<'a>>,
    #[serde(borrow, default)]
    pub http_get: Option<HttpGetAction<'a>>,
    #[serde(borrow, default)]
    pub tcp_socket: Option<TcpSocketAction<'a>>,
    #[serde(borrow, default)]
    pub grpc: Option<GrpcAction<'a>>,
    #[serde(default)]
    pub initial_delay_seconds: Option<i64>,
    #[serde(default)]
    pub timeout_seconds: Option<i64>,
    #[serde(default)]
    pub period_seconds: Option<i64>,
    #[serde(default)]
    pub success_threshold: Option<i64>,
    #[serde(default)]
    pub failure_threshold: Option<i64>,
}

/// `exec`: a command run in the container.
#[derive(Debug, Default, PartialEq, Deserialize)]
pub struct ExecAction<'a> {
    #[serde(borrow, default, deserialize_with = "nullable_vec")]
    pub command: Vec<Text<'a>>,
}

/// `httpGet`: an HTTP GET against the container.
#[derive(Debug, Default, PartialEq, Deserialize)]
pub struct HttpGetAction<'a> {
    #[serde(borrow, default)]
    pub path: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub port: Option<Port<'a>>,
    #[serde(borrow, default)]
    pub host: Option<Text<'a>>,
    #[serde(borrow, default)]
    pub scheme: Option<Text<'a>>,
}

/// `tcpSocket`: a TCP connect to the container.
#[derive(Debug, Default, PartialEq, Deserialize)]
pub struct TcpSocketAction<'a> {
    #[serde(borrow, default)]
    pub port: Option<Port<'a>>,
    #[serde(borrow, default)]
    pub host: Option<Text<'a>>,
}

/// `grpc`: a gRPC health check (numeric port only, by API definition).
#[derive(Debug, Default, PartialEq, Deserialize)]
pub struct GrpcAction<'a> {
    #[serde(default)]
    pub port: Option<i64>,
    #[serde(borrow, default)]
    pub service: Option<Text<'a>>,
}

/// An `IntOrString` port: a number, or the name of one of the container's ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Port<'a> {
    Number(i64),
    Name(Cow<'a, str>),
}

impl<'de: 'a, 'a> Deserialize<'de> for Port<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PortVisitor<'a>(PhantomData<Port<'a>>);
        impl<'de: 'a, 'a> Visitor<'de> for PortVisitor<'a> {
            type Value = Port<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number or name")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Port::Number(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                // Out-of-range numbers stay out of range (and so fail the check).
                Ok(Port::Number(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Port::Name(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Port::Name(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Port::Name(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_any(PortVisitor(PhantomData))
    }
}

impl fmt::Display for Port<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Port::Number(n) => write!(f, "{n}"),
            Port::Name(name) => write!(f, "{name:?}"),
        }
    }
}
