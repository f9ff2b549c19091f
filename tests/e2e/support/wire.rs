//! Raw connections to the in-process ingress below what `hyper` offers, shared by the
//! modules that speak bytes and frames themselves: an mTLS stream that negotiated HTTP/2.

use std::sync::Arc;

use tokio::net::TcpStream;

use super::ingress::{Node, client_config};

/// An mTLS connection as `client` that negotiated HTTP/2 by ALPN.
pub async fn connect_h2_tls(
    node: &Node,
    client: &trust_core::testing::TestNode,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut config = client_config(client);
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(node.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    tls
}
