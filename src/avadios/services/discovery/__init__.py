"""The discovery service: signed Kademlia DHT, capability profiles, peers and routing."""
