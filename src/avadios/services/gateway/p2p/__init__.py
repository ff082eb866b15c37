"""The gateway's P2P side: TLS bound to the node key (tls), signed envelopes (envelope), the gRPC node that serves
and dials peers (node), and the peer door every service of the node uses (door)."""
