package wire

// PublishResult is the server's answer to an accepted firmware publish.
type PublishResult struct {
	Target    string `json:"target"`
	Model     string `json:"model"`
	Version   string `json:"version"`
	Channel   string `json:"channel"`
	Length    int64  `json:"length"`
	SHA256    string `json:"sha256"`
	Role      string `json:"role"`
	Snapshot  int64  `json:"snapshot_version"`
	Timestamp int64  `json:"timestamp_version"`
}

// PushResult is the server's answer to an accepted metadata push.
type PushResult struct {
	Roles     map[string]int64 `json:"roles"` // new version per pushed role
	Revoked   []string         `json:"revoked,omitempty"`
	Snapshot  int64            `json:"snapshot_version"`
	Timestamp int64            `json:"timestamp_version"`
}
