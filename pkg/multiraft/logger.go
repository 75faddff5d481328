package multiraft

import (
	"context"
	"fmt"
	"log/slog"
)

// raftLogger adapts slog to raft.Logger for one group. It carries the group id instead of a
// derived *slog.Logger so that an idle group costs two words, not a cloned handler.
type raftLogger struct {
	l     *slog.Logger
	group uint64
}

func (r raftLogger) logv(level slog.Level, v []any) {
	if r.l.Enabled(context.Background(), level) {
		r.l.Log(context.Background(), level, fmt.Sprint(v...), "group", r.group)
	}
}

func (r raftLogger) logf(level slog.Level, format string, v []any) {
	if r.l.Enabled(context.Background(), level) {
		r.l.Log(context.Background(), level, fmt.Sprintf(format, v...), "group", r.group)
	}
}

func (r raftLogger) Debug(v ...any)              { r.logv(slog.LevelDebug, v) }
func (r raftLogger) Debugf(f string, v ...any)   { r.logf(slog.LevelDebug, f, v) }
func (r raftLogger) Info(v ...any)               { r.logv(slog.LevelDebug, v) }
func (r raftLogger) Infof(f string, v ...any)    { r.logf(slog.LevelDebug, f, v) }
func (r raftLogger) Warning(v ...any)            { r.logv(slog.LevelWarn, v) }
func (r raftLogger) Warningf(f string, v ...any) { r.logf(slog.LevelWarn, f, v) }
func (r raftLogger) Error(v ...any)              { r.logv(slog.LevelError, v) }
func (r raftLogger) Errorf(f string, v ...any)   { r.logf(slog.LevelError, f, v) }

// Fatal and Panic mean raft found its own state broken; going on would risk the log.
func (r raftLogger) Fatal(v ...any)            { r.Panic(v...) }
func (r raftLogger) Fatalf(f string, v ...any) { r.Panicf(f, v...) }
func (r raftLogger) Panic(v ...any)            { r.Panicf("%s", fmt.Sprint(v...)) }
func (r raftLogger) Panicf(f string, v ...any) {
	msg := fmt.Sprintf(f, v...)
	r.l.Error(msg, "group", r.group)
	panic(fmt.Sprintf("raft group %d: %s", r.group, msg))
}
