"""RemoteSandbox and its HTTP client, against real servers."""
