//! A small hyper HTTP/1 server run as a pingora background service: the admin listener, and
//! the demo's IdP and backend. The listener is bound before the server starts, so a taken
//! port is a start-up error, not a log line.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

pub type Resp = Response<Full<Bytes>>;

pub struct HttpService<F> {
    listener: Mutex<Option<std::net::TcpListener>>,
    handler: Arc<F>,
}

impl<F> HttpService<F> {
    pub fn new(listener: std::net::TcpListener, handler: F) -> Self {
        HttpService {
            listener: Mutex::new(Some(listener)),
            handler: Arc::new(handler),
        }
    }
}

#[async_trait::async_trait]
impl<F, Fut> BackgroundService for HttpService<F>
where
    F: Fn(Request<hyper::body::Incoming>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Resp> + Send + 'static,
{
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(std_listener) = self.listener.lock().ok().and_then(|mut l| l.take()) else {
            return;
        };
        let addr = std_listener.local_addr().ok();
        let listener = match std_listener
            .set_nonblocking(true)
            .and_then(|_| tokio::net::TcpListener::from_std(std_listener))
        {
            Ok(l) => l,
            Err(e) => {
                log::error!("http listener {addr:?}: {e}");
                return;
            }
        };
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let handler = self.handler.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            let fut = handler(req);
                            async move { Ok::<_, Infallible>(fut.await) }
                        });
                        let io = hyper_util::rt::TokioIo::new(stream);
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, svc)
                            .await;
                    });
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
