package doctor

// CheckBridge reports what stpm-bridge needs on this machine: p11-kit's
// server, which exports the token, and p11-kit-client.so, which remote
// hosts need (and which, found here, lets you try the bridge locally).
func (d *Doctor) CheckBridge() []Result {
	if d.p11kitTool == "" {
		return []Result{skipped("bridge: not checked, p11-kit is not installed (see above)")}
	}
	var out []Result
	server, err := d.sys.findServer()
	if err != nil {
		out = append(out, warning(hintOf(err), "bridge: p11-kit server is missing (%v): stpm-bridge cannot export the token", err))
	}
	client, cerr := d.sys.findClient()
	if cerr != nil {
		out = append(out, warning(hintOf(cerr), "bridge: p11-kit-client.so is missing here: remote hosts need it to use a forwarded token, and it lets you try the bridge locally"))
	}
	if err == nil && cerr == nil {
		out = append(out, ok("bridge: p11-kit server (%s) and p11-kit-client.so (%s) are installed", server, client))
	}
	return out
}
