//! `Policy`: compile, evaluate, mask, run the policy's own tests.

use kubeleash_core::mask::MaskError;
use kubeleash_core::policy::{self as core, Identity};
use kubeleash_core::request::{self, Request};
use napi::bindgen_prelude::{AsyncTask, Buffer, Either, Env, Task};
use napi_derive::napi;
use serde_json::Value;

use crate::convert::{bytes_arg, headers_arg};
use crate::errors;
use crate::masker::Masker;

/// A request's authorization attributes, as the API server's `RequestInfo` holds them. Empty
/// strings mean absent (an empty `namespace` on a list is every namespace, an empty `apiGroup`
/// the core group).
#[napi(object)]
#[derive(Debug, Clone)]
pub struct Attributes {
    /// Whether this is a resource request (`/api/...`, `/apis/...`) or a non-resource one.
    pub resource_request: bool,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`, ...
    pub verb: String,
    /// The API group; empty for the core group.
    pub api_group: String,
    /// The API version.
    pub api_version: String,
    /// The namespace.
    pub namespace: String,
    /// The resource, plural and lowercase.
    pub resource: String,
    /// The subresource (`log`, `exec`, `status`, ...), empty when there is none.
    pub subresource: String,
    /// The object name.
    pub name: String,
    /// The decoded path.
    pub path: String,
}

impl From<&request::Attributes> for Attributes {
    fn from(a: &request::Attributes) -> Self {
        Attributes {
            resource_request: a.resource_request,
            verb: a.verb.clone(),
            api_group: a.api_group.clone(),
            api_version: a.api_version.clone(),
            namespace: a.namespace.clone(),
            resource: a.resource.clone(),
            subresource: a.subresource.clone(),
            name: a.name.clone(),
            path: a.path.clone(),
        }
    }
}

/// A request to decide.
#[napi(object)]
pub struct EvaluateInput {
    /// The HTTP method (`GET`, `POST`, ...).
    pub method: String,
    /// The request target as sent on the wire, percent-encoding kept
    /// (`/api/v1/namespaces/dev/pods?watch=1`).
    pub target: String,
    /// The user the request comes from.
    pub user: Option<String>,
    /// The groups the user belongs to.
    pub groups: Option<Vec<String>>,
    /// Request headers.
    #[napi(ts_type = "Record<string, string | string[]> | Array<[string, string]>")]
    pub headers: Option<Value>,
    /// The request body as sent.
    pub body: Option<Either<String, Buffer>>,
}

/// A decision.
#[napi(object, use_nullable = true)]
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// What the policy decides.
    #[napi(ts_type = "'allow' | 'deny' | 'approve'")]
    pub effect: String,
    /// The deciding rule's name; `null` for the default deny and for refusals.
    pub rule: Option<String>,
    /// Why, in words.
    pub reason: String,
    /// The classified request; `null` when its target was refused as non-canonical.
    pub request: Option<Attributes>,
    /// Whether the request may go ahead without a person's approval (`effect === 'allow'`).
    pub allowed: bool,
}

impl Evaluation {
    fn of(decision: &core::Decision, request: Option<&Request>) -> Self {
        Evaluation {
            effect: decision.effect.as_str().to_string(),
            rule: decision.rule.as_deref().map(str::to_string),
            reason: decision.reason.clone(),
            request: request.map(|r| Attributes::from(&r.attributes)),
            allowed: decision.allowed(),
        }
    }
}

/// The response a body belongs to, beyond the request: its `Content-Type` and
/// `Content-Encoding`.
#[napi(object)]
#[derive(Debug, Clone, Default)]
pub struct MaskOptions {
    /// The response's `Content-Type`; default `application/json`, or `text/plain` for pod logs.
    pub content_type: Option<String>,
    /// The response's `Content-Encoding` (`gzip` is decoded; the output is never compressed).
    pub content_encoding: Option<String>,
}

/// The outcome of one of the policy's own tests.
#[napi(object, use_nullable = true)]
#[derive(Debug, Clone)]
pub struct TestOutcome {
    /// The test's name.
    pub name: String,
    /// The request line it sent.
    pub request: String,
    /// The effect it expected.
    #[napi(ts_type = "'allow' | 'deny' | 'approve'")]
    pub expect: String,
    /// The rule it expected to decide, if it named one.
    pub expect_rule: Option<String>,
    /// What the policy decided.
    pub decision: Evaluation,
    /// Whether the decision matched the expectation.
    pub passed: bool,
}

/// The outcomes of all of a policy's tests.
#[napi(object)]
#[derive(Debug, Clone)]
pub struct TestReport {
    /// Whether every test passed.
    pub passed: bool,
    /// Every outcome, in the order the tests are written.
    pub outcomes: Vec<TestOutcome>,
}

/// A compiled policy: immutable; compile once, evaluate many.
#[napi]
#[derive(Clone)]
pub struct Policy {
    pub(crate) inner: core::Policy,
}

/// What a masking job needs, resolved on the main thread.
pub(crate) struct MaskJob {
    pub policy: core::Policy,
    pub request: Request,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
}

impl MaskJob {
    fn run(&self, body: &[u8]) -> Result<Vec<u8>, (MaskError, Vec<u8>)> {
        let mut m = self
            .policy
            .masker(
                &self.request,
                self.content_type.as_deref(),
                self.content_encoding.as_deref(),
            )
            .map_err(|e| (e, Vec::new()))?;
        let mut out = Vec::with_capacity(body.len() + 64);
        match m
            .feed_into(body, &mut out)
            .and_then(|()| m.finish_into(&mut out))
        {
            Ok(()) => Ok(out),
            Err(e) => Err((e, out)),
        }
    }
}

/// Masks a whole body on the libuv thread pool.
pub struct MaskTask {
    job: MaskJob,
    body: Buffer,
    failed: Option<(MaskError, Vec<u8>)>,
}

impl Task for MaskTask {
    type Output = Vec<u8>;
    type JsValue = Buffer;

    fn compute(&mut self) -> napi::Result<Vec<u8>> {
        match self.job.run(&self.body) {
            Ok(out) => Ok(out),
            Err(f) => {
                let message = f.0.to_string();
                self.failed = Some(f);
                Err(napi::Error::from_reason(message))
            }
        }
    }

    fn resolve(&mut self, _env: Env, output: Vec<u8>) -> napi::Result<Buffer> {
        Ok(output.into())
    }

    fn reject(&mut self, env: Env, err: napi::Error) -> napi::Result<Buffer> {
        match self.failed.take() {
            Some((e, out)) => Err(errors::mask_error(&env, &e, out)),
            None => Err(err),
        }
    }
}

#[napi]
impl Policy {
    /// Compile a policy from YAML (JSON is YAML too). Throws a `PolicyError` (`code:
    /// 'policy-invalid'`) listing every problem with its line and column.
    #[napi(factory)]
    pub fn from_yaml(env: &Env, text: String) -> napi::Result<Policy> {
        core::Policy::from_yaml(&text)
            .map(|inner| Policy { inner })
            .map_err(|e| errors::policy_errors(env, &e))
    }

    /// Read and compile a policy file. Throws a `PolicyError` (`code: 'policy-read'` when the
    /// file cannot be read, `'policy-invalid'` when it does not compile).
    #[napi(factory)]
    pub fn from_file(env: &Env, path: String) -> napi::Result<Policy> {
        let text =
            std::fs::read_to_string(&path).map_err(|e| errors::policy_read(env, &path, &e))?;
        Policy::from_yaml(env, text)
    }

    /// The policy's `metadata.name`.
    #[napi(getter)]
    pub fn name(&self) -> Option<String> {
        self.inner.name().map(str::to_string)
    }

    /// How many rules the policy holds.
    #[napi(getter)]
    pub fn rule_count(&self) -> u32 {
        u32::try_from(self.inner.rule_count()).unwrap_or(u32::MAX)
    }

    /// How many tests the policy carries.
    #[napi(getter)]
    pub fn test_count(&self) -> u32 {
        u32::try_from(self.inner.test_count()).unwrap_or(u32::MAX)
    }

    /// Classify a request as the API server would and decide it. A non-canonical target is
    /// denied with the reason it was refused (and `request: null`).
    #[napi]
    pub fn evaluate(&self, env: &Env, input: EvaluateInput) -> napi::Result<Evaluation> {
        let headers = headers_arg(input.headers.as_ref())
            .map_err(|m| errors::type_error(env, "invalid-headers", &m))?;
        let identity = Identity::new(
            input.user.unwrap_or_default(),
            input.groups.unwrap_or_default(),
        );
        let body = input.body.as_ref().map(bytes_arg);
        let eval = self
            .inner
            .evaluate(&identity, &input.method, &input.target, &headers, body);
        Ok(Evaluation::of(&eval.decision, eval.request.as_ref()))
    }

    /// Mask a whole response body as kubeleash would deliver the response to this request.
    /// Throws a `MaskError` (with `code`) when the body cannot be masked; nothing is returned
    /// then. For large bodies prefer `maskAsync`, which masks off the main thread.
    #[napi(
        ts_args_type = "method: string, target: string, body: string | Buffer, headers?: Record<string, string | string[]> | Array<[string, string]> | null, options?: MaskOptions | null"
    )]
    pub fn mask(
        &self,
        env: &Env,
        method: String,
        target: String,
        body: Either<String, Buffer>,
        headers: Option<Value>,
        options: Option<MaskOptions>,
    ) -> napi::Result<Buffer> {
        let job = self.job(env, &method, &target, headers.as_ref(), options)?;
        job.run(bytes_arg(&body))
            .map(Buffer::from)
            .map_err(|(e, _)| errors::mask_error(env, &e, Vec::new()))
    }

    /// `mask` on the libuv thread pool: the main thread stays free while a large body is masked.
    #[napi(
        ts_return_type = "Promise<Buffer>",
        ts_args_type = "method: string, target: string, body: Buffer, headers?: Record<string, string | string[]> | Array<[string, string]> | null, options?: MaskOptions | null"
    )]
    pub fn mask_async(
        &self,
        env: &Env,
        method: String,
        target: String,
        body: Buffer,
        headers: Option<Value>,
        options: Option<MaskOptions>,
    ) -> napi::Result<AsyncTask<MaskTask>> {
        let job = self.job(env, &method, &target, headers.as_ref(), options)?;
        Ok(AsyncTask::new(MaskTask {
            job,
            body,
            failed: None,
        }))
    }

    /// A streaming masker for the response to this request: `feed(chunk)` returns the bytes
    /// that are safe to send now, `finish()` the rest; `stream()` wraps it in a `Transform`.
    #[napi(
        ts_args_type = "method: string, target: string, headers?: Record<string, string | string[]> | Array<[string, string]> | null, options?: MaskOptions | null"
    )]
    pub fn masker(
        &self,
        env: &Env,
        method: String,
        target: String,
        headers: Option<Value>,
        options: Option<MaskOptions>,
    ) -> napi::Result<Masker> {
        let job = self.job(env, &method, &target, headers.as_ref(), options)?;
        let masker = job
            .policy
            .masker(
                &job.request,
                job.content_type.as_deref(),
                job.content_encoding.as_deref(),
            )
            .map_err(|e| errors::mask_error(env, &e, Vec::new()))?;
        Ok(Masker::new(masker))
    }

    /// Run the policy's own `tests:`.
    #[napi]
    pub fn test(&self) -> TestReport {
        let report = self.inner.run_tests();
        TestReport {
            passed: report.passed(),
            outcomes: report
                .outcomes
                .iter()
                .map(|o| TestOutcome {
                    name: o.name.clone(),
                    request: o.request.clone(),
                    expect: o.expect.as_str().to_string(),
                    expect_rule: o.expect_rule.clone(),
                    decision: Evaluation::of(&o.decision, None),
                    passed: o.passed,
                })
                .collect(),
        }
    }
}

impl Policy {
    fn job(
        &self,
        env: &Env,
        method: &str,
        target: &str,
        headers: Option<&Value>,
        options: Option<MaskOptions>,
    ) -> napi::Result<MaskJob> {
        let headers =
            headers_arg(headers).map_err(|m| errors::type_error(env, "invalid-headers", &m))?;
        let request =
            request::classify(method, target, &headers).map_err(|e| errors::refused(env, &e))?;
        let options = options.unwrap_or_default();
        // None: the framing code picks what the API server sends (text for a pod log, JSON
        // else).
        let content_type = options.content_type.filter(|c| !c.is_empty());
        Ok(MaskJob {
            policy: self.inner.clone(),
            request,
            content_type,
            content_encoding: options.content_encoding,
        })
    }
}

/// Classify a request as the API server would: its authorization attributes. Throws an error
/// whose `code` names the refusal (`empty-segment`, `duplicate-query-key`, ...) when the target
/// is not canonical.
#[napi(
    ts_args_type = "method: string, target: string, headers?: Record<string, string | string[]> | Array<[string, string]> | null"
)]
pub fn classify(
    env: &Env,
    method: String,
    target: String,
    headers: Option<Value>,
) -> napi::Result<Attributes> {
    let headers = headers_arg(headers.as_ref())
        .map_err(|m| errors::type_error(env, "invalid-headers", &m))?;
    request::classify(&method, &target, &headers)
        .map(|r| Attributes::from(&r.attributes))
        .map_err(|e| errors::refused(env, &e))
}
