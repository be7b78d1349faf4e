//! The endpoints: request parsing and validation, the batchers, the JSON answers.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{AppState, Engine};
use crate::batcher::{ItemError, SubmitError, Ticket};
use crate::{clip_score, cosine, softmax};

/// An error answer in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    param: Option<String>,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), param: None, retry_after: None }
    }
    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    fn param(mut self, p: impl Into<String>) -> ApiError {
        self.param = Some(p.into());
        self
    }
    fn overloaded(message: impl Into<String>) -> ApiError {
        ApiError { retry_after: Some(1), ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message) }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = match self.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::PAYLOAD_TOO_LARGE => "request_too_large",
            StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => "timeout_error",
            StatusCode::SERVICE_UNAVAILABLE => "overloaded_error",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        };
        let body = json!({"error": {"message": self.message, "type": kind, "param": self.param, "code": null}});
        let mut r = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// A panic in a handler: 500 for that request, the server goes on.
pub fn panic_response(p: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown".into());
    tracing::error!("panic in a request handler: {what}");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("internal error (panic: {what})")).into_response()
}

pub async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no endpoint {} {}: POST /v1/embeddings, /embed, /score, /classify; GET /health, /metrics",
            req.method(),
            req.uri().path()
        ),
    )
}

pub async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, format!("{} is not allowed on {}", req.method(), req.uri().path()))
}

/// `Authorization: Bearer KEY` when the server has a key (compared in constant time).
pub async fn auth(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(key) = &st.config.api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim);
        // hashes first: equal lengths, so the comparison's time says nothing about the key
        let ok = given.is_some_and(|g| {
            use subtle::ConstantTimeEq;
            let (a, b) = (blake3::hash(g.as_bytes()), blake3::hash(key.as_bytes()));
            bool::from(a.as_bytes().ct_eq(b.as_bytes()))
        });
        if !ok {
            let msg = if given.is_some() {
                "invalid API key"
            } else {
                "missing API key: send the header `Authorization: Bearer KEY`"
            };
            return ApiError::new(StatusCode::UNAUTHORIZED, msg).into_response();
        }
    }
    next.run(req).await
}

pub async fn health(State(st): State<Arc<AppState>>) -> Response {
    match st.engine.get() {
        Some(e) => Json(json!({
            "status": "ok",
            "engine": e.clip.engine_description(),
            "uptime_seconds": st.started.elapsed().as_secs_f64(),
        }))
        .into_response(),
        None => {
            let mut r = (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "loading"}))).into_response();
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1));
            r
        }
    }
}

/// What every model endpoint does first: the model must be ready, a slot free (else 503
/// before the body is read), then the body read within the limits.
struct Admitted<'a> {
    engine: &'a Engine,
    _slot: tokio::sync::SemaphorePermit<'a>,
}

fn admit(st: &AppState) -> ApiResult<Admitted<'_>> {
    let engine = st.engine.get().ok_or_else(|| ApiError::overloaded("the model is still loading"))?;
    let slot = st.in_flight.try_acquire().map_err(|_| {
        ApiError::overloaded(format!("too many requests in progress ({}): retry later", st.config.max_queue))
    })?;
    Ok(Admitted { engine, _slot: slot })
}

/// Reads the whole body: at most `max_body_bytes` (413), within the read timeout (408).
async fn read_body(st: &AppState, headers: &HeaderMap, body: Body) -> ApiResult<Bytes> {
    let limit = st.config.max_body_bytes;
    let too_large = |n: &str| {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("request body of {n} bytes is over the limit of {limit}"))
    };
    if let Some(n) =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok())
    {
        if n > limit as u64 {
            return Err(too_large(&n.to_string()));
        }
    }
    let read = async {
        let mut body = body;
        let mut buf: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ApiError::bad(format!("reading the request body: {e}")))?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > limit {
                    return Err(too_large("more than"));
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(Bytes::from(buf))
    };
    match tokio::time::timeout(st.config.read_timeout, read).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request body did not arrive within {:?}", st.config.read_timeout),
        )),
    }
}

/// Parses JSON with the path of the offending field in the message and in `param`.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> ApiResult<T> {
    if bytes.is_empty() {
        return Err(ApiError::bad("empty request body: expected a JSON object"));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = if path == "." {
            format!("invalid JSON body: {inner}")
        } else {
            format!("invalid JSON body at `{path}`: {inner}")
        };
        let err = ApiError::bad(msg);
        if path == "." {
            err
        } else {
            err.param(path)
        }
    })
}

/// Runs `f` within the request timeout (504 past it; the tickets it holds are dropped with
/// it, and with them the items still queued).
async fn within<T>(st: &AppState, f: impl std::future::Future<Output = ApiResult<T>>) -> ApiResult<T> {
    match tokio::time::timeout(st.config.request_timeout, f).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!("the request was not done within {:?}", st.config.request_timeout),
        )),
    }
}

fn submit_error(tower: &str, e: SubmitError) -> ApiError {
    match e {
        SubmitError::TooLarge { .. } => ApiError::bad(format!("too many {tower}s in one request: {e}")),
        _ => ApiError::overloaded(format!("{tower} queue: {e}")),
    }
}

fn engine_error(e: ItemError) -> ApiError {
    match e {
        ItemError::Invalid(m) => ApiError::bad(m),
        e => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Decodes an image given as base64 or a `data:` URL (never a path or a URL to fetch).
fn decode_image(s: &str) -> Result<Vec<u8>, String> {
    let b64 = if let Some(rest) = s.strip_prefix("data:") {
        let (meta, data) = rest.split_once(',').ok_or("a data URL without a comma before its data")?;
        if !meta.ends_with(";base64") {
            return Err(format!("data URL `data:{meta},…` is not base64 (expected `data:image/…;base64,…`)"));
        }
        data
    } else {
        if s.starts_with("http://") || s.starts_with("https://") || s.starts_with("file:") {
            return Err("URLs are not fetched: send the image's bytes as base64 or a data URL".into());
        }
        s
    };
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let b64 = b64.trim();
    if b64.is_empty() {
        return Err("empty image data".into());
    }
    engine
        .decode(b64)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(b64.trim_end_matches('=')))
        .map_err(|e| format!("invalid base64: {e}"))
}

fn check_text(st: &AppState, param: &str, t: &str) -> ApiResult<()> {
    let max = st.config.max_text_bytes;
    if t.len() > max {
        return Err(ApiError::bad(format!("{param} is {} bytes long, over the limit of {max}", t.len())).param(param));
    }
    Ok(())
}

fn check_items(st: &AppState, n: usize) -> ApiResult<()> {
    let max = st.config.max_items;
    if n > max {
        return Err(ApiError::bad(format!("{n} items in one request, over the limit of {max} (--max-items)")));
    }
    Ok(())
}

/// Images (already decoded from base64, or a decoding error) and texts of a request.
struct Inputs {
    images: Vec<Result<Vec<u8>, String>>,
    texts: Vec<String>,
}

/// The body of `/embed` and `/score`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImagesTexts {
    #[serde(default)]
    images: Vec<String>,
    #[serde(default)]
    texts: Vec<String>,
}

/// The body of `/classify`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClassifyBody {
    #[serde(default)]
    images: Vec<String>,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default = "default_template")]
    template: String,
    #[serde(default = "default_top_k")]
    top_k: usize,
}

fn default_template() -> String {
    "a photo of a {}.".into()
}
fn default_top_k() -> usize {
    5
}

fn is_multipart(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("multipart/form-data"))
}

/// `images`/`texts` from JSON, or from `multipart/form-data`: file fields (or fields named
/// `image`/`images`) are images, fields named `text`/`texts` texts.
async fn read_inputs(st: &AppState, req: Request) -> ApiResult<Inputs> {
    let (parts, body) = req.into_parts();
    let bytes = read_body(st, &parts.headers, body).await?;
    if is_multipart(&parts.headers) {
        let req = Request::from_parts(parts, Body::from(bytes));
        let mut mp = axum::extract::Multipart::from_request(req, &())
            .await
            .map_err(|e| ApiError::bad(format!("multipart body: {}", e.body_text())))?;
        let mut inputs = Inputs { images: Vec::new(), texts: Vec::new() };
        while let Some(field) =
            mp.next_field().await.map_err(|e| ApiError::bad(format!("multipart body: {}", e.body_text())))?
        {
            let name = field.name().unwrap_or("").to_string();
            let is_file = field.file_name().is_some();
            let data = field
                .bytes()
                .await
                .map_err(|e| ApiError::bad(format!("multipart field `{name}`: {}", e.body_text())))?;
            match name.as_str() {
                "text" | "texts" | "text[]" | "texts[]" if !is_file => {
                    let t = String::from_utf8(data.to_vec()).map_err(|_| {
                        ApiError::bad(format!("multipart field `{name}` is not UTF-8 text")).param(name)
                    })?;
                    inputs.texts.push(t);
                }
                "image" | "images" | "image[]" | "images[]" | "file" | "files" => inputs.images.push(Ok(data.to_vec())),
                _ if is_file => inputs.images.push(Ok(data.to_vec())),
                _ => {
                    return Err(ApiError::bad(format!(
                        "multipart field `{name}`: expected image files (`image`) and `text` fields"
                    ))
                    .param(name))
                }
            }
            check_items(st, inputs.images.len() + inputs.texts.len())?;
        }
        return Ok(inputs);
    }
    let body: ImagesTexts = parse_json(&bytes)?;
    check_items(st, body.images.len() + body.texts.len())?;
    Ok(Inputs { images: body.images.iter().map(|s| decode_image(s)).collect(), texts: body.texts })
}

/// Submits the decodable images and all texts; the results in input order (an image that
/// did not decode keeps its error).
async fn encode(
    st: &AppState,
    e: &Engine,
    images: Vec<Result<Vec<u8>, String>>,
    name: impl Fn(usize) -> String,
    texts: Vec<String>,
) -> ApiResult<(Vec<Result<Vec<f32>, String>>, Vec<(Vec<f32>, usize)>)> {
    for (i, t) in texts.iter().enumerate() {
        check_text(st, &format!("texts[{i}]"), t)?;
    }
    let mut to_submit = Vec::new();
    let mut image_results: Vec<Option<Result<Vec<f32>, String>>> = Vec::with_capacity(images.len());
    for (i, r) in images.into_iter().enumerate() {
        match r {
            Ok(bytes) => {
                to_submit.push((name(i), bytes));
                image_results.push(None);
            }
            Err(err) => image_results.push(Some(Err(format!("{}: {err}", name(i))))),
        }
    }
    // submitted together, waited for together: both towers work at once
    let img_ticket: Option<Ticket<Vec<f32>>> = if to_submit.is_empty() {
        None
    } else {
        Some(e.images.submit(to_submit).map_err(|err| submit_error("image", err))?)
    };
    let txt_ticket =
        if texts.is_empty() { None } else { Some(e.texts.submit(texts).map_err(|err| submit_error("text", err))?) };
    let imgs = match img_ticket {
        Some(t) => t.wait().await,
        None => Vec::new(),
    };
    let txts = match txt_ticket {
        Some(t) => t.wait().await,
        None => Vec::new(),
    };
    let mut imgs = imgs.into_iter();
    let images = image_results
        .into_iter()
        .map(|r| match r {
            Some(r) => r,
            None => imgs.next().expect("one result per submitted image").map_err(|e| e.to_string()),
        })
        .collect();
    let texts = txts.into_iter().collect::<Result<Vec<_>, _>>().map_err(engine_error)?;
    Ok((images, texts))
}

#[derive(Serialize)]
struct ItemOut<'a, I: Serialize> {
    input: I,
    #[serde(skip_serializing_if = "Option::is_none")]
    embedding: Option<&'a [f32]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// `POST /embed`: the CLI's `embed --format json` answer.
pub async fn embed(State(st): State<Arc<AppState>>, req: Request) -> ApiResult<Response> {
    let a = admit(&st)?;
    within(&st, async {
        let inputs = read_inputs(&st, req).await?;
        if inputs.images.is_empty() && inputs.texts.is_empty() {
            return Err(ApiError::bad("nothing to embed: give `images` and/or `texts`"));
        }
        let texts = inputs.texts.clone();
        let (images, txt) = encode(&st, a.engine, inputs.images, |i| format!("images[{i}]"), inputs.texts).await?;
        let images: Vec<ItemOut<usize>> = images
            .iter()
            .enumerate()
            .map(|(i, r)| match r {
                Ok(e) => ItemOut { input: i, embedding: Some(e), error: None },
                Err(err) => ItemOut { input: i, embedding: None, error: Some(err) },
            })
            .collect();
        let texts: Vec<ItemOut<&str>> = texts
            .iter()
            .zip(&txt)
            .map(|(t, (e, _))| ItemOut { input: t.as_str(), embedding: Some(e), error: None })
            .collect();
        let clip = &a.engine.clip;
        #[derive(Serialize)]
        struct Out<'a> {
            images: Vec<ItemOut<'a, usize>>,
            texts: Vec<ItemOut<'a, &'a str>>,
            engine: String,
            precision: crate::gpu::Precision,
        }
        Ok(Json(Out { images, texts, engine: clip.engine_description(), precision: clip.precision() }).into_response())
    })
    .await
}

#[derive(Serialize)]
struct ErrorOut<'a> {
    input: usize,
    error: &'a str,
}

#[derive(Serialize)]
struct TopOut<'a> {
    label: &'a str,
    prob: f32,
    logit: f32,
    cosine: f32,
}

#[derive(Serialize)]
struct ClassOut<'a> {
    image: usize,
    top: Vec<TopOut<'a>>,
}

#[derive(Serialize)]
struct ScoreOut<'a> {
    image: usize,
    text: &'a str,
    score: f32,
    cosine: f32,
    logit: f32,
}

/// `POST /score`: every image × every text.
pub async fn score(State(st): State<Arc<AppState>>, req: Request) -> ApiResult<Response> {
    let a = admit(&st)?;
    within(&st, async {
        let inputs = read_inputs(&st, req).await?;
        if inputs.images.is_empty() {
            return Err(ApiError::bad("no images: give `images` (base64 or data URLs)").param("images"));
        }
        if inputs.texts.is_empty() {
            return Err(ApiError::bad("no texts: give `texts`").param("texts"));
        }
        let texts = inputs.texts.clone();
        let (images, txt) = encode(&st, a.engine, inputs.images, |i| format!("images[{i}]"), inputs.texts).await?;
        let scale = a.engine.clip.logit_scale();
        let mut scores = Vec::new();
        let mut errors = Vec::new();
        for (i, r) in images.iter().enumerate() {
            match r {
                Ok(e) => {
                    for (t, (te, _)) in texts.iter().zip(&txt) {
                        let c = cosine(e, te);
                        scores.push(ScoreOut { image: i, text: t, score: clip_score(c), cosine: c, logit: scale * c });
                    }
                }
                Err(err) => errors.push(ErrorOut { input: i, error: err }),
            }
        }
        #[derive(Serialize)]
        struct Out<'a> {
            scores: Vec<ScoreOut<'a>>,
            errors: Vec<ErrorOut<'a>>,
        }
        Ok(Json(Out { scores, errors }).into_response())
    })
    .await
}

/// `POST /classify`: softmax over the labels (through the template) per image, top k.
pub async fn classify(State(st): State<Arc<AppState>>, req: Request) -> ApiResult<Response> {
    let a = admit(&st)?;
    within(&st, async {
        let (parts, body) = req.into_parts();
        let bytes = read_body(&st, &parts.headers, body).await?;
        let b: ClassifyBody = parse_json(&bytes)?;
        check_items(&st, b.images.len() + b.labels.len())?;
        if b.images.is_empty() {
            return Err(ApiError::bad("no images: give `images` (base64 or data URLs)").param("images"));
        }
        if b.labels.is_empty() {
            return Err(ApiError::bad("no labels: give `labels`").param("labels"));
        }
        if !b.template.contains("{}") {
            return Err(ApiError::bad(format!("template {:?} has no {{}} for the label", b.template)).param("template"));
        }
        if b.top_k == 0 {
            return Err(ApiError::bad("top_k must be at least 1").param("top_k"));
        }
        let prompts: Vec<String> = b.labels.iter().map(|l| b.template.replace("{}", l)).collect();
        let images = b.images.iter().map(|s| decode_image(s)).collect();
        let (images, txt) = encode(&st, a.engine, images, |i| format!("images[{i}]"), prompts).await?;
        let scale = a.engine.clip.logit_scale();
        let k = b.top_k.min(b.labels.len());
        let mut results = Vec::new();
        let mut errors = Vec::new();
        for (i, r) in images.iter().enumerate() {
            let e = match r {
                Ok(e) => e,
                Err(err) => {
                    errors.push(ErrorOut { input: i, error: err });
                    continue;
                }
            };
            let cos: Vec<f32> = txt.iter().map(|(t, _)| cosine(e, t)).collect();
            let logits: Vec<f32> = cos.iter().map(|c| scale * c).collect();
            let probs = softmax(&logits);
            let mut order: Vec<usize> = (0..b.labels.len()).collect();
            order.sort_by(|&x, &y| probs[y].total_cmp(&probs[x]).then(x.cmp(&y)));
            order.truncate(k);
            let top = order
                .iter()
                .map(|&j| TopOut { label: &b.labels[j], prob: probs[j], logit: logits[j], cosine: cos[j] })
                .collect();
            results.push(ClassOut { image: i, top });
        }
        #[derive(Serialize)]
        struct Out<'a> {
            results: Vec<ClassOut<'a>>,
            errors: Vec<ErrorOut<'a>>,
            template: &'a str,
        }
        Ok(Json(Out { results, errors, template: &b.template }).into_response())
    })
    .await
}

/// The body of `/v1/embeddings`.
#[derive(Deserialize)]
struct OpenAiBody {
    #[serde(default)]
    model: Option<String>,
    input: Value,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<Value>,
    #[serde(default)]
    #[allow(dead_code)]
    user: Option<String>,
}

/// `POST /v1/embeddings`: OpenAI's embeddings API.
pub async fn openai_embeddings(State(st): State<Arc<AppState>>, req: Request) -> ApiResult<Response> {
    let a = admit(&st)?;
    within(&st, async {
        let (parts, body) = req.into_parts();
        let bytes = read_body(&st, &parts.headers, body).await?;
        let b: OpenAiBody = parse_json(&bytes)?;
        let base64_out = match b.encoding_format.as_deref() {
            None | Some("float") => false,
            Some("base64") => true,
            Some(other) => {
                return Err(ApiError::bad(format!("encoding_format {other:?}: expected \"float\" or \"base64\""))
                    .param("encoding_format"))
            }
        };
        if let Some(d) = &b.dimensions {
            if d.as_u64() != Some(a.engine.clip.embed_dim() as u64) {
                return Err(ApiError::bad(format!(
                    "dimensions {d}: this model's embeddings have {} dimensions",
                    a.engine.clip.embed_dim()
                ))
                .param("dimensions"));
            }
        }
        let inputs: Vec<String> = match b.input {
            Value::String(s) => vec![s],
            Value::Array(items) => {
                check_items(&st, items.len())?;
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| match v {
                        Value::String(s) => Ok(s),
                        Value::Number(_) | Value::Array(_) => Err(ApiError::bad(format!(
                            "input[{i}]: token arrays are not accepted; send texts (or data:image URLs) as strings"
                        ))
                        .param(format!("input[{i}]"))),
                        v => Err(ApiError::bad(format!("input[{i}]: expected a string, got {}", kind(&v)))
                            .param(format!("input[{i}]"))),
                    })
                    .collect::<ApiResult<_>>()?
            }
            v => {
                return Err(ApiError::bad(format!("input: expected a string or a list of strings, got {}", kind(&v)))
                    .param("input"))
            }
        };
        if inputs.is_empty() {
            return Err(ApiError::bad("input is empty: give at least one string").param("input"));
        }
        // images: data:image/…;base64 URLs; everything else is a text
        let mut images = Vec::new();
        let mut image_at = Vec::new();
        let mut texts = Vec::new();
        let mut text_at = Vec::new();
        for (i, s) in inputs.into_iter().enumerate() {
            if s.len() > 11 && s[..11].eq_ignore_ascii_case("data:image/") {
                let bytes = decode_image(&s)
                    .map_err(|e| ApiError::bad(format!("input[{i}]: {e}")).param(format!("input[{i}]")))?;
                images.push(Ok(bytes));
                image_at.push(i);
            } else {
                if s.is_empty() {
                    return Err(ApiError::bad(format!("input[{i}] is an empty string")).param(format!("input[{i}]")));
                }
                check_text(&st, &format!("input[{i}]"), &s)?;
                texts.push(s);
                text_at.push(i);
            }
        }
        let names = image_at.clone();
        let (img, txt) = encode(&st, a.engine, images, move |k| format!("input[{}]", names[k]), texts).await?;
        let n = image_at.len() + text_at.len();
        let mut rows: Vec<Option<Vec<f32>>> = vec![None; n];
        let mut tokens = 0usize;
        for (k, r) in img.into_iter().enumerate() {
            let i = image_at[k];
            rows[i] = Some(r.map_err(|e| ApiError::bad(e).param(format!("input[{i}]")))?);
        }
        for (k, (e, t)) in txt.into_iter().enumerate() {
            rows[text_at[k]] = Some(e);
            tokens += t;
        }
        #[derive(Serialize)]
        #[serde(untagged)]
        enum Embedding {
            Float(Vec<f32>),
            Base64(String),
        }
        #[derive(Serialize)]
        struct Item {
            object: &'static str,
            index: usize,
            embedding: Embedding,
        }
        #[derive(Serialize)]
        struct Usage {
            prompt_tokens: usize,
            total_tokens: usize,
        }
        #[derive(Serialize)]
        struct Out {
            object: &'static str,
            data: Vec<Item>,
            model: String,
            usage: Usage,
        }
        let data = rows
            .into_iter()
            .enumerate()
            .map(|(index, e)| {
                let e = e.expect("every input has a row");
                let embedding = if base64_out {
                    let bytes: Vec<u8> = e.iter().flat_map(|x| x.to_le_bytes()).collect();
                    Embedding::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
                } else {
                    Embedding::Float(e)
                };
                Item { object: "embedding", index, embedding }
            })
            .collect();
        let model = b.model.unwrap_or_else(|| st.config.model_name.clone());
        let usage = Usage { prompt_tokens: tokens, total_tokens: tokens };
        Ok(Json(Out { object: "list", data, model, usage }).into_response())
    })
    .await
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
