//! samlgate: a reverse-proxy SSO gateway. See README.md for the request path.
//!
//! Modules, in the order a request meets them:
//! - `config`: the config file, validated once at start;
//! - `proxy`: pingora hooks: route, sanitize, session gate, policy, inject identity headers;
//! - `jwt`: the signed identity token for upstreams, and its JWKS;
//! - `session`: cookie token -> live session (moka) -> redb;
//! - `login`: the login flow, start and finish; `logout`: signing out, here and from the IdP;
//! - `saml`: AuthnRequests out, verified assertions in (samael + libxmlsec1);
//! - `provision`: what a login changes in the directory;
//! - `store`: redb: users, groups, sessions, replay cache, audit log;
//! - `server`: wiring it together; `reload`: SIGHUP; `tls`: our certificate, swappable;
//! - `demo`: the development IdP and echo backend.

pub mod admin;
pub mod cli;
pub mod config;
pub mod demo;
pub mod directory;
pub mod http_service;
pub mod idp_metadata;
pub mod jwt;
pub mod logging;
pub mod login;
pub mod logout;
pub mod metrics;
pub mod provision;
pub mod proxy;
pub mod reload;
pub mod saml;
pub mod sd_notify;
pub mod server;
pub mod session;
pub mod store;
pub mod tls;
