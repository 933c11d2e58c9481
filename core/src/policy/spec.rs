//! The policy document as written: YAML (or JSON) shape, with the source location of every node
//! that a compile error may need to point at.

use serde::Deserialize;
use serde_saphyr::Spanned;

pub(crate) type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct PolicyDoc {
    pub api_version: S<String>,
    pub kind: S<String>,
    #[serde(default)]
    pub metadata: Option<MetadataDoc>,
    pub spec: SpecDoc,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MetadataDoc {
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SpecDoc {
    #[serde(default)]
    pub rules: Vec<S<RuleDoc>>,
    #[serde(default)]
    pub tests: Vec<S<TestDoc>>,
    #[serde(default)]
    pub masks: Option<super::masks::MasksDoc>,
    #[serde(default)]
    pub approvals: Option<super::floor::ApprovalsDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct RuleDoc {
    pub name: S<String>,
    pub effect: S<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub subjects: Option<S<SubjectsDoc>>,
    #[serde(default)]
    pub verbs: Option<S<Vec<S<String>>>>,
    #[serde(default)]
    pub api_groups: Option<S<Vec<S<String>>>>,
    #[serde(default)]
    pub resources: Option<S<Vec<S<String>>>>,
    #[serde(default)]
    pub namespaces: Option<S<Vec<S<String>>>>,
    #[serde(default)]
    pub names: Option<S<Vec<S<String>>>>,
    #[serde(default, rename = "nonResourceURLs")]
    pub non_resource_urls: Option<S<Vec<S<String>>>>,
    #[serde(default)]
    pub when: Option<Vec<S<ConditionDoc>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubjectsDoc {
    #[serde(default)]
    pub users: Vec<S<String>>,
    #[serde(default)]
    pub groups: Vec<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ConditionDoc {
    pub path: S<String>,
    #[serde(default)]
    pub equals: Option<serde_json::Value>,
    #[serde(default)]
    pub not_equals: Option<serde_json::Value>,
    #[serde(default, rename = "in")]
    pub in_: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    pub not_in: Option<Vec<serde_json::Value>>,
    #[serde(default)]
    pub matches: Option<S<String>>,
    #[serde(default)]
    pub exists: Option<bool>,
    /// `[min, max]`, both inclusive: a number within them (a widened approval's field range).
    #[serde(default)]
    pub between: Option<S<Vec<f64>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TestDoc {
    pub name: S<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    pub request: S<String>,
    #[serde(default)]
    pub headers: Vec<String>,
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    pub expect: S<String>,
    #[serde(default)]
    pub rule: Option<String>,
}
