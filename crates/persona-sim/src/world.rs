//! The simulated Persona organisation: templates, inquiries, sessions and one-time codes, and the
//! status transitions between them. Pure state: every method takes "now"; nothing here does I/O.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;

use crate::ids::random_alnum;
use crate::search;
use crate::status::Status;

use super::SimError;
use super::wire;

/// Persona's default cap on sessions per inquiry (SPEC `paths/inquiry-sessions.yaml`).
pub const MAX_SESSIONS_PER_INQUIRY: usize = 25;
/// Default for every expiry interval the docs describe (create, start, resume, one-time link).
pub const DEFAULT_INTERVAL_SECONDS: i64 = 86_400;

pub struct Template {
    pub id: String,
    pub name: String,
    /// Published versions, oldest first; the last one is the latest published version.
    pub versions: Vec<TemplateVersion>,
}

pub struct TemplateVersion {
    pub id: String,
    pub published_at: DateTime<Utc>,
}

impl Template {
    pub fn latest(&self) -> &TemplateVersion {
        self.versions
            .last()
            .expect("a template always has a published version")
    }
}

/// Expiry intervals of one inquiry: the template defaults, possibly overridden at creation.
#[derive(Clone, Copy)]
pub struct Intervals {
    pub after_create: Duration,
    pub after_start: Duration,
    pub after_resume: Duration,
    pub one_time_link: Duration,
}

impl Default for Intervals {
    fn default() -> Self {
        let day = Duration::seconds(DEFAULT_INTERVAL_SECONDS);
        Self {
            after_create: day,
            after_start: day,
            after_resume: day,
            one_time_link: day,
        }
    }
}

pub struct Session {
    pub id: String,
    pub token: String,
    /// Fixed at creation to the inquiry's expiry at that moment (DOCS `/inquiry-sessions`).
    pub expires_at: DateTime<Utc>,
    /// Opened in the hosted flow; resume only reuses sessions nobody opened yet.
    pub used: bool,
    pub expired: bool,
}

impl Session {
    fn valid_at(&self, now: DateTime<Utc>) -> bool {
        !self.expired && self.expires_at > now
    }
}

pub struct Inquiry {
    pub id: String,
    pub seq: u64,
    pub status: Status,
    pub reference_id: Option<String>,
    pub account_id: String,
    /// The reference id of the account (what search's `reference_id` matches).
    pub account_reference_id: Option<String>,
    pub note: Option<String>,
    pub tags: Vec<String>,
    /// Already in the response form `{name: {type, value}}`.
    pub fields: Map<String, Value>,
    pub redirect_uri: Option<String>,
    pub template_id: String,
    pub template_version_id: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    pub marked_for_review_at: Option<DateTime<Utc>>,
    pub decisioned_at: Option<DateTime<Utc>>,
    pub expired_at: Option<DateTime<Utc>>,
    pub reviewer: Option<String>,
    pub intervals: Intervals,
    pub sessions: Vec<Session>,
}

struct OneTimeCode {
    inquiry_id: String,
    expires_at: DateTime<Utc>,
    used: bool,
}

/// Which template an inquiry is created from.
pub enum TemplateChoice {
    Template(String),
    Version(String),
}

pub struct NewInquiry {
    pub template: TemplateChoice,
    /// The inquiry's own `reference-id`.
    pub reference_id: Option<String>,
    /// The account it is attached to (created when new).
    pub account_reference_id: Option<String>,
    pub fields: Map<String, Value>,
    pub redirect_uri: Option<String>,
    pub note: Option<String>,
    pub tags: Vec<String>,
    pub intervals: Intervals,
    pub create_session: bool,
    pub create_one_time_link: bool,
}

/// What a create handed out besides the inquiry.
pub struct Created {
    pub inquiry_id: String,
    pub session_token: Option<String>,
    pub one_time_code: Option<String>,
}

/// A status change to announce by webhook; the inquiry is rendered at the moment of the change.
pub struct Event {
    pub name: &'static str,
    pub inquiry: Value,
    pub at: DateTime<Utc>,
}

/// End-user and reviewer actions the control surface can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Start,
    Complete,
    Fail,
    Approve,
    Decline,
    MarkForReview,
}

impl Action {
    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(Value::String(s.to_owned())).ok()
    }
}

/// Why a hosted-flow visit was refused.
pub enum Refused {
    NotFound(String),
    Forbidden(String),
    Gone(String),
    Conflict(String),
    BadRequest(String),
}

pub struct Opened {
    pub inquiry_id: String,
    pub status: Status,
    pub template_version_id: String,
    pub on_latest_version: bool,
}

pub struct World {
    templates: BTreeMap<String, Template>,
    inquiries: HashMap<String, Inquiry>,
    /// Inquiry ids, oldest first (creation order breaks ties between equal timestamps).
    order: Vec<String>,
    /// session token → (inquiry id, session id)
    tokens: HashMap<String, (String, String)>,
    codes: HashMap<String, OneTimeCode>,
    accounts: HashMap<String, String>,
    token_key: Vec<u8>,
    seq: u64,
    outbox: Vec<Event>,
    /// No open inquiry expires before this; `None` = not known, the next sweep scans them all.
    /// Keeps a request's sweep O(1) when nothing is due, so big runs do not go quadratic.
    expiry_floor: Option<DateTime<Utc>>,
    /// Actions to apply to an inquiry just before its next expire call runs.
    before_expire: HashMap<String, Action>,
    /// What `POST /inquiries/search` answers from; it trails the inquiries above.
    index: search::Index,
}

fn is_finished(status: &Status) -> bool {
    status.is_finished()
}

impl World {
    pub fn new(templates: &[(String, String)], now: DateTime<Utc>) -> Self {
        let templates = templates
            .iter()
            .enumerate()
            .map(|(i, (t, v))| {
                let template = Template {
                    id: t.to_string(),
                    name: format!("Simulated template {}", i + 1),
                    versions: vec![TemplateVersion {
                        id: v.to_string(),
                        published_at: now,
                    }],
                };
                (t.to_string(), template)
            })
            .collect();
        Self {
            templates,
            inquiries: HashMap::new(),
            order: Vec::new(),
            tokens: HashMap::new(),
            codes: HashMap::new(),
            accounts: HashMap::new(),
            token_key: random_alnum(32).into_bytes(),
            seq: 0,
            outbox: Vec::new(),
            expiry_floor: None,
            before_expire: HashMap::new(),
            index: search::Index::default(),
        }
    }

    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.outbox)
    }

    /// (template id, latest published version id) for every template.
    pub fn template_ids(&self) -> Vec<(String, String)> {
        self.templates
            .values()
            .map(|t| (t.id.clone(), t.latest().id.clone()))
            .collect()
    }

    pub fn template(&self, id: &str) -> Option<&Template> {
        self.templates.get(id)
    }

    pub fn inquiry(&self, id: &str) -> Option<&Inquiry> {
        self.inquiries.get(id)
    }

    /// All inquiries, newest first.
    pub fn newest_first(&self) -> impl Iterator<Item = &Inquiry> {
        self.order.iter().rev().map(|id| &self.inquiries[id])
    }

    fn emit(&mut self, name: &'static str, inquiry_id: &str, at: DateTime<Utc>) {
        let inquiry = wire::inquiry_resource(&self.inquiries[inquiry_id]);
        self.outbox.push(Event { name, inquiry, at });
        self.reindex(inquiry_id, at);
    }

    /// Hands the inquiry's searchable attributes to the search index as of `at`. Called
    /// wherever `updated-at` moves: every status change (through `emit`) and every session.
    fn reindex(&mut self, id: &str, at: DateTime<Utc>) {
        let inq = &self.inquiries[id];
        let doc = search::Indexed {
            status: inq.status,
            created_at: inq.created_at,
            updated_at: inq.updated_at,
            reference_id: inq.account_reference_id.clone(),
            template_id: inq.template_id.clone(),
        };
        self.index.record(id, at, doc);
    }

    /// The search index, as a search at `now` with `lag` sees it: (inquiry, indexed
    /// attributes) for every inquiry indexed by then, newest first.
    pub fn indexed(
        &self,
        now: DateTime<Utc>,
        lag: Duration,
    ) -> impl Iterator<Item = (&Inquiry, &search::Indexed)> {
        self.newest_first()
            .filter_map(move |i| self.index.visible(&i.id, now, lag).map(|d| (i, d)))
    }

    /// Does what Persona's expirer does: every open inquiry whose `expires-at` passed becomes
    /// `expired` as of that moment, with its sessions.
    pub fn sweep(&mut self, now: DateTime<Utc>) {
        if self.expiry_floor.is_some_and(|floor| now < floor) {
            return;
        }
        let mut due = Vec::new();
        let mut floor = DateTime::<Utc>::MAX_UTC;
        for id in &self.order {
            let inq = &self.inquiries[id];
            match inq.expires_at {
                Some(t) if inq.status.is_open() && t <= now => due.push(id.clone()),
                Some(t) if inq.status.is_open() => floor = floor.min(t),
                _ => {}
            }
        }
        self.expiry_floor = Some(floor);
        for id in due {
            let at = self.inquiries[&id]
                .expires_at
                .expect("filtered on expires_at");
            self.expire_at(&id, at);
        }
    }

    fn expire_at(&mut self, id: &str, at: DateTime<Utc>) {
        let inq = self.inquiries.get_mut(id).expect("caller checked the id");
        inq.status = Status::Expired;
        inq.expired_at = Some(at);
        inq.updated_at = at;
        // Persona's examples show `expires-at: null` once an inquiry is expired.
        inq.expires_at = None;
        for s in &mut inq.sessions {
            s.expired = true;
        }
        self.emit("inquiry.expired", id, at);
    }

    pub fn publish_version(
        &mut self,
        template_id: &str,
        now: DateTime<Utc>,
    ) -> Result<String, SimError> {
        let template = self
            .templates
            .get_mut(template_id)
            .ok_or_else(|| SimError::UnknownTemplate(template_id.to_owned()))?;
        let id = format!("itmplv_{}", random_alnum(24));
        template.versions.push(TemplateVersion {
            id: id.clone(),
            published_at: now,
        });
        Ok(id)
    }

    fn resolve_template(&self, choice: &TemplateChoice) -> Result<(String, String), SimError> {
        match choice {
            TemplateChoice::Template(t) => self
                .templates
                .get(t)
                .map(|tpl| (tpl.id.clone(), tpl.latest().id.clone()))
                .ok_or_else(|| SimError::UnknownTemplate(t.clone())),
            TemplateChoice::Version(v) => self
                .templates
                .values()
                .find(|tpl| tpl.versions.iter().any(|x| &x.id == v))
                .map(|tpl| (tpl.id.clone(), v.clone()))
                .ok_or_else(|| SimError::UnknownTemplate(v.clone())),
        }
    }

    pub fn create(&mut self, req: NewInquiry, now: DateTime<Utc>) -> Result<Created, SimError> {
        let (template_id, template_version_id) = self.resolve_template(&req.template)?;
        let account_id = match &req.account_reference_id {
            Some(r) => self
                .accounts
                .entry(r.clone())
                .or_insert_with(|| format!("act_{}", random_alnum(24)))
                .clone(),
            None => format!("act_{}", random_alnum(24)),
        };
        self.seq += 1;
        let id = format!("inq_{}", random_alnum(24));
        let inquiry = Inquiry {
            id: id.clone(),
            seq: self.seq,
            status: Status::Created,
            reference_id: req.reference_id,
            account_id,
            account_reference_id: req.account_reference_id,
            note: req.note,
            tags: req.tags,
            fields: req.fields,
            redirect_uri: req.redirect_uri,
            template_id,
            template_version_id,
            created_at: now,
            updated_at: now,
            started_at: None,
            expires_at: Some(now + req.intervals.after_create),
            completed_at: None,
            failed_at: None,
            marked_for_review_at: None,
            decisioned_at: None,
            expired_at: None,
            reviewer: None,
            intervals: req.intervals,
            sessions: Vec::new(),
        };
        let expires_at = inquiry.expires_at;
        self.inquiries.insert(id.clone(), inquiry);
        self.order.push(id.clone());
        self.lower_expiry_floor(expires_at);
        let session_token = if req.create_session {
            Some(self.new_session(&id, now)?)
        } else {
            None
        };
        let one_time_code = if req.create_one_time_link {
            let ttl = self.inquiries[&id].intervals.one_time_link;
            Some(self.new_code(&id, ttl, now)?)
        } else {
            None
        };
        self.emit("inquiry.created", &id, now);
        Ok(Created {
            inquiry_id: id,
            session_token,
            one_time_code,
        })
    }

    fn get_mut(&mut self, id: &str) -> Result<&mut Inquiry, SimError> {
        self.inquiries
            .get_mut(id)
            .ok_or_else(|| SimError::UnknownInquiry(id.to_owned()))
    }

    /// Creates a session and returns its token; refuses past the per-inquiry session cap.
    fn new_session(&mut self, id: &str, now: DateTime<Utc>) -> Result<String, SimError> {
        let key = self.token_key.clone();
        let inq = self.get_mut(id)?;
        if inq.sessions.len() >= MAX_SESSIONS_PER_INQUIRY {
            return Err(SimError::Invalid(format!(
                "Inquiry has reached the maximum of {MAX_SESSIONS_PER_INQUIRY} sessions"
            )));
        }
        let expires_at = inq.expires_at.unwrap_or(now + inq.intervals.after_resume);
        let session_id = format!("iqse_{}", random_alnum(24));
        let token = mint_token(&key, &session_id, now, expires_at);
        inq.sessions.push(Session {
            id: session_id.clone(),
            token: token.clone(),
            expires_at,
            used: false,
            expired: false,
        });
        inq.updated_at = now;
        self.tokens
            .insert(token.clone(), (id.to_owned(), session_id));
        self.reindex(id, now);
        Ok(token)
    }

    fn new_code(
        &mut self,
        id: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<String, SimError> {
        self.new_session(id, now)?;
        let code = random_alnum(20);
        self.codes.insert(
            code.clone(),
            OneTimeCode {
                inquiry_id: id.to_owned(),
                expires_at: now + ttl,
                used: false,
            },
        );
        Ok(code)
    }

    /// `POST /inquiries/{id}/resume`. `expired` becomes `pending` with a fresh expiry from the
    /// resume interval; `created` and `pending` keep status and expiry and just get a token.
    pub fn resume(&mut self, id: &str, now: DateTime<Utc>) -> Result<String, SimError> {
        let inq = self.get_mut(id)?;
        if is_finished(&inq.status) {
            return Err(SimError::Conflict(format!(
                "Inquiry is {} and cannot be resumed",
                inq.status
            )));
        }
        if inq.status == Status::Expired {
            if inq.sessions.len() >= MAX_SESSIONS_PER_INQUIRY {
                return Err(SimError::Invalid(format!(
                    "Inquiry has reached the maximum of {MAX_SESSIONS_PER_INQUIRY} sessions"
                )));
            }
            inq.status = Status::Pending;
            inq.expires_at = Some(now + inq.intervals.after_resume);
            inq.expired_at = None;
            inq.updated_at = now;
            let expires_at = inq.expires_at;
            self.lower_expiry_floor(expires_at);
            return self.new_session(id, now);
        }
        if let Some(s) = inq.sessions.iter().find(|s| !s.used && s.valid_at(now)) {
            return Ok(s.token.clone());
        }
        self.new_session(id, now)
    }

    /// Arms [`World::expire`]'s hook for `id`.
    pub fn before_expire(&mut self, id: &str, action: Action) -> Result<(), SimError> {
        self.get_mut(id)?;
        self.before_expire.insert(id.to_owned(), action);
        Ok(())
    }

    /// `POST /inquiries/{id}/expire`. Expiring an expired inquiry changes nothing.
    pub fn expire(&mut self, id: &str, now: DateTime<Utc>) -> Result<(), SimError> {
        if let Some(action) = self.before_expire.remove(id) {
            self.act(id, action, now)?;
        }
        let status = self.get_mut(id)?.status;
        match status {
            Status::Expired => Ok(()),
            Status::Created | Status::Pending => {
                self.expire_at(id, now);
                Ok(())
            }
            other => Err(SimError::Conflict(format!(
                "Inquiry is {other} and cannot be expired"
            ))),
        }
    }

    /// `POST /inquiries/{id}/generate-one-time-link`; returns the code.
    pub fn one_time_link(
        &mut self,
        id: &str,
        expires_in: Option<Duration>,
        now: DateTime<Utc>,
    ) -> Result<String, SimError> {
        let inq = self.get_mut(id)?;
        if inq.status == Status::Expired {
            return Err(SimError::Conflict(
                "Cannot generate a one-time link for an expired inquiry; resume it first".into(),
            ));
        }
        if is_finished(&inq.status) {
            return Err(SimError::Conflict(format!(
                "Inquiry is {} and cannot be continued",
                inq.status
            )));
        }
        let ttl = expires_in.unwrap_or(inq.intervals.one_time_link);
        self.new_code(id, ttl, now)
    }

    /// End-user and reviewer actions (control surface).
    pub fn act(
        &mut self,
        id: &str,
        action: Action,
        now: DateTime<Utc>,
    ) -> Result<Status, SimError> {
        use Status as S;
        let status = self.get_mut(id)?.status;
        let refuse = || {
            Err(SimError::Conflict(format!(
                "cannot {action:?} an inquiry that is {status}"
            )))
        };
        match action {
            Action::Start => match status {
                S::Created => self.start(id, now),
                _ => return refuse(),
            },
            Action::Complete | Action::Fail => {
                match status {
                    S::Created => self.start(id, now),
                    S::Pending => {}
                    _ => return refuse(),
                }
                let inq = self.get_mut(id)?;
                inq.updated_at = now;
                inq.expires_at = None;
                if action == Action::Complete {
                    inq.status = S::Completed;
                    inq.completed_at = Some(now);
                    self.emit("inquiry.completed", id, now);
                } else {
                    inq.status = S::Failed;
                    inq.failed_at = Some(now);
                    self.emit("inquiry.failed", id, now);
                }
            }
            Action::MarkForReview => match status {
                S::Completed | S::Failed => {
                    let inq = self.get_mut(id)?;
                    inq.status = S::NeedsReview;
                    inq.marked_for_review_at = Some(now);
                    inq.updated_at = now;
                    self.emit("inquiry.marked-for-review", id, now);
                }
                _ => return refuse(),
            },
            Action::Approve | Action::Decline => match status {
                S::Completed | S::Failed | S::NeedsReview => {
                    let inq = self.get_mut(id)?;
                    inq.decisioned_at = Some(now);
                    inq.updated_at = now;
                    inq.reviewer = Some("user_simulatedreviewer".into());
                    if action == Action::Approve {
                        inq.status = S::Approved;
                        self.emit("inquiry.approved", id, now);
                    } else {
                        inq.status = S::Declined;
                        self.emit("inquiry.declined", id, now);
                    }
                }
                _ => return refuse(),
            },
        }
        Ok(self.inquiries[id].status)
    }

    fn start(&mut self, id: &str, now: DateTime<Utc>) {
        let inq = self.inquiries.get_mut(id).expect("caller checked the id");
        inq.status = Status::Pending;
        inq.started_at = Some(now);
        inq.updated_at = now;
        inq.expires_at = Some(now + inq.intervals.after_start);
        let expires_at = inq.expires_at;
        self.lower_expiry_floor(expires_at);
        self.emit("inquiry.started", id, now);
    }

    /// Keeps [`World::sweep`]'s shortcut honest when an inquiry gets a new `expires-at`.
    fn lower_expiry_floor(&mut self, expires_at: Option<DateTime<Utc>>) {
        if let (Some(floor), Some(t)) = (self.expiry_floor, expires_at) {
            self.expiry_floor = Some(floor.min(t));
        }
    }

    fn opened(&self, id: &str) -> Opened {
        let inq = &self.inquiries[id];
        let latest = self.templates[&inq.template_id].latest().id.clone();
        Opened {
            inquiry_id: inq.id.clone(),
            status: inq.status,
            template_version_id: inq.template_version_id.clone(),
            on_latest_version: inq.template_version_id == latest,
        }
    }

    fn check_openable(&self, id: &str) -> Result<(), Refused> {
        let inq = self
            .inquiries
            .get(id)
            .ok_or_else(|| Refused::NotFound(format!("no inquiry {id}")))?;
        match inq.status {
            Status::Created | Status::Pending => Ok(()),
            Status::Expired => Err(Refused::Gone("inquiry is expired".into())),
            ref s => Err(Refused::Conflict(format!("inquiry is already {s}"))),
        }
    }

    /// The end user opens `?inquiry-id=…[&session-token=…]`.
    pub fn open_inquiry(
        &mut self,
        id: &str,
        token: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Opened, Refused> {
        self.check_openable(id)?;
        let pending = self.inquiries[id].status == Status::Pending;
        match token {
            Some(t) => self.use_token(id, t, now)?,
            None if pending => {
                return Err(Refused::Forbidden(
                    "a pending inquiry needs a session token".into(),
                ));
            }
            None => {}
        }
        Ok(self.opened(id))
    }

    fn use_token(&mut self, id: &str, token: &str, now: DateTime<Utc>) -> Result<(), Refused> {
        let Some((inq_id, session_id)) = self.tokens.get(token).cloned() else {
            return Err(Refused::Forbidden("session token is not valid".into()));
        };
        if inq_id != id {
            return Err(Refused::Forbidden(
                "session token belongs to another inquiry".into(),
            ));
        }
        let inq = self
            .inquiries
            .get_mut(id)
            .expect("token map points at inquiries");
        let session = inq
            .sessions
            .iter_mut()
            .find(|s| s.id == session_id)
            .expect("token map points at sessions");
        if !session.valid_at(now) {
            return Err(Refused::Forbidden("session token is expired".into()));
        }
        session.used = true;
        Ok(())
    }

    /// The end user opens a one-time link `?code=…`: it works once.
    pub fn open_code(&mut self, code: &str, now: DateTime<Utc>) -> Result<Opened, Refused> {
        let Some(entry) = self.codes.get(code) else {
            return Err(Refused::NotFound("unknown one-time link code".into()));
        };
        if entry.used {
            return Err(Refused::Forbidden("one-time link was already used".into()));
        }
        if entry.expires_at <= now {
            return Err(Refused::Forbidden("one-time link is expired".into()));
        }
        let id = entry.inquiry_id.clone();
        self.check_openable(&id)?;
        self.codes.get_mut(code).expect("looked up above").used = true;
        Ok(self.opened(&id))
    }

    /// The end user opens a static link: a new `created` inquiry, client-side.
    pub fn open_static(
        &mut self,
        template: TemplateChoice,
        reference_id: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<Opened, Refused> {
        let req = NewInquiry {
            template,
            account_reference_id: reference_id.clone(),
            reference_id,
            fields: Map::new(),
            redirect_uri: None,
            note: None,
            tags: Vec::new(),
            intervals: Intervals::default(),
            create_session: false,
            create_one_time_link: false,
        };
        let created = self.create(req, now).map_err(|e| match e {
            SimError::UnknownTemplate(t) => Refused::NotFound(format!("no template {t}")),
            other => Refused::BadRequest(other.to_string()),
        })?;
        Ok(self.opened(&created.inquiry_id))
    }
}

/// A JWT-shaped token (`header.claims.signature`, HS256 over the simulator's random key) whose
/// claims mirror the SPEC example; clients must treat it as opaque, the simulator looks it up.
fn mint_token(key: &[u8], session_id: &str, now: DateTime<Utc>, exp: DateTime<Utc>) -> String {
    let header = b64url(br#"{"alg":"HS256"}"#);
    let claims = json!({
        "sub": session_id,
        "aud": "persona-verify",
        "iss": "persona-simulator",
        "iat": now.timestamp(),
        "nbf": now.timestamp(),
        "exp": exp.timestamp(),
        "jti": random_alnum(16),
        "sid": session_id,
    });
    let claims = b64url(claims.to_string().as_bytes());
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(format!("{header}.{claims}").as_bytes());
    let sig = b64url(&mac.finalize().into_bytes());
    format!("{header}.{claims}.{sig}")
}

fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_known_vectors() {
        assert_eq!(b64url(b"f"), "Zg");
        assert_eq!(b64url(b"fo"), "Zm8");
        assert_eq!(b64url(b"foo"), "Zm9v");
        assert_eq!(b64url(b"foob"), "Zm9vYg");
        assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
    }
}
