"""The gateways the relay follows: Evolution API v2 and WPPConnect Server (payloads, REST, streams)."""
