// Command pulumi-language-python is a Pulumi language host for Python programs.
//
// Why this exists: the Go module proxy that this project may use refuses the official
// host (module github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3 has no
// tags, and every commit and pseudo-version lookup is refused), while it serves the
// Pulumi SDK's Go module, whose generated LanguageRuntime stubs this host uses. It runs
// programs through the SDK's own `pulumi-language-python-exec` script, the one the
// official host runs, so the engine, the SDK and the program runner are all Pulumi's.
// Dependency installation is the project's set-up script's job, so InstallDependencies
// reports nothing to do.
//
// It is Go, not Python, because the engine waits for it on every command: it is ready
// in milliseconds, where a Python host first imports grpc and the SDK's stubs.
//
// The engine starts it with its own address as the first argument and reads the gRPC
// port from the first line of standard output. scripts/toolchain.sh builds it and runs
// it through a wrapper that sets PULUMI_LANGUAGE_PYTHON_EXEC (the exec script) and
// EVENTBUS_PYTHON (the interpreter used when Pulumi.yaml names no virtualenv).
package main

import (
	_ "embed"

	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/emptypb"
)

// version is the Pulumi SDK version this host was built for (set with -ldflags -X).
var version = "3.0.0"

// exitBail is the exec script's exit code for "the error has already been shown".
const exitBail = 32

// pollInterval is how often the host and the program check that their parent is still alive.
const pollInterval = 500 * time.Millisecond

// warmReplyTimeout bounds the wait for a warm program's answer (it answers once its imports are
// done); past it, the program is started cold.
const warmReplyTimeout = 2 * time.Minute

// asOfficialEnv, set to 1 (tests only), makes this host stand in for the official one: it
// does not watch its engine, and it runs the exec script as is, without programScript.
const asOfficialEnv = "EVENTBUS_HOST_AS_OFFICIAL"

// programScript is how this host runs a program, cold or warm (program.py, which says how):
// `python -u -c programScript --cold EXEC_SCRIPT ARGS...`, or `... --warm SOCKET FD ENGINE_PID
// MODULES PROGRAM_DIR` (startWarm). Its EXIT_BAIL and POLL_INTERVAL are exitBail and pollInterval.
//
//go:embed program.py
var programScript string

func asOfficial() bool { return os.Getenv(asOfficialEnv) == "1" }

// noWarmEnv, set to 0, turns the warm program off (startWarm): every program then starts cold,
// e.g. to compare.
const noWarmEnv = "EVENTBUS_WARM"

func warmOff() bool { return asOfficial() || os.Getenv(noWarmEnv) == "0" }

// residentEnv turns the resident off (0) or on (1); unset, it is on except under CI (the CI
// variable set, and not 0 or false), where each command is a new machine's and the resident would
// only outlive it.
const residentEnv = "EVENTBUS_RESIDENT"

func residentOff() bool {
	switch os.Getenv(residentEnv) {
	case "0":
		return true
	case "1":
		return false
	}
	switch os.Getenv("CI") {
	case "", "0", "false", "False", "FALSE":
		return false
	}
	return true
}

// residentReplyTimeout bounds the wait for a resident's answer (it forks and answers in
// milliseconds); past it, the host starts a warm program itself.
const residentReplyTimeout = 2 * time.Second

// withheldNames and withheldParts say which variables of the engine's environment are secrets
// that a warm program (and so a resident) is started without: the host that runs the program
// hands them over with the run. isWithheld is the rule; program.py's _withheld is the same.
var (
	withheldNames = map[string]bool{"PULUMI_CONFIG_PASSPHRASE": true, "PULUMI_CONFIG_PASSPHRASE_FILE": true,
		"PULUMI_ACCESS_TOKEN": true, "PULUMI_BACKEND_URL": true}
	withheldParts = []string{"PASSWORD", "PASSWD", "PASSPHRASE", "TOKEN", "SECRET", "CREDENTIAL", "CREDS", "NKEY"}
)

// isWithheld is true for those names, names with those parts or ending in _KEY, and URLs with a
// password (scheme://user:password@host...).
func isWithheld(key, value string) bool {
	upper := strings.ToUpper(key)
	if withheldNames[key] || strings.HasSuffix(upper, "_KEY") {
		return true
	}
	for _, part := range withheldParts {
		if strings.Contains(upper, part) {
			return true
		}
	}
	scheme := strings.Index(value, "://")
	if scheme < 0 {
		return false
	}
	rest := value[scheme+3:]
	at, slash := strings.Index(rest, "@"), strings.Index(rest, "/")
	return at >= 0 && (slash < 0 || at < slash)
}

// warmEnviron is this host's environment without the withheld variables.
func warmEnviron() []string {
	var env []string
	for _, kv := range os.Environ() {
		if k, v, _ := strings.Cut(kv, "="); !isWithheld(k, v) {
			env = append(env, kv)
		}
	}
	return env
}

// preloadOption is the Pulumi.yaml runtime option naming the modules the dynamic provider
// imports as it starts (the engine passes it to the provider as PULUMI_RUNTIME_PROVIDERPRELOAD,
// which the provider shim scripts/toolchain.sh installs reads). When it is set, this host also
// starts that provider together with the program: see prestartProvider.
const preloadOption = "providerPreload"

// preloadUpdateOption names the modules the provider also imports as it starts when the
// program runs for an update (`pulumi up`, not a preview): what its creates and updates need
// (the specs, the client) and an unchanged preview's calls do not. The engine passes it as
// PULUMI_RUNTIME_PROVIDERPRELOADUPDATE; prestartUpdateToken asks for it.
const preloadUpdateOption = "providerPreloadUpdate"

// prestartToken is an Invoke token in the dynamic provider's package; the provider declines
// every Invoke, and the engine starts it to ask. prestartUpdateToken asks the same, for an
// update: the provider shim scripts/toolchain.sh installs then imports providerPreloadUpdate.
const (
	prestartToken       = "pulumi-python:dynamic:prestart"
	prestartUpdateToken = "pulumi-python:dynamic:prestart-update"
)

// programPreloadOption is the Pulumi.yaml runtime option naming the modules a program imports
// before its first resource. When it is set, the host that answers the engine's About (which
// `pulumi preview` and `pulumi up` ask first, while the engine still loads the stack and derives
// the secrets key) starts a warm program process that imports them, and the host that then
// runs the program hands the run to it: see startWarm and runWarm.
const programPreloadOption = "programPreload"

type host struct {
	pulumirpc.UnimplementedLanguageRuntimeServer
	engineAddress string
	execScript    string
	mu            sync.Mutex
	children      map[*exec.Cmd]struct{}
	warmPids      map[int]struct{} // warm programs this host runs (not its children)
	warmStarted   bool
}

// pythonFor is the interpreter of the virtualenv Pulumi.yaml names, else the default one.
func pythonFor(info *pulumirpc.ProgramInfo) string {
	if info != nil && info.GetOptions() != nil {
		if v := info.GetOptions().GetFields()["virtualenv"].GetStringValue(); v != "" {
			if !filepath.IsAbs(v) {
				v = filepath.Join(info.GetRootDirectory(), v)
			}
			if python := filepath.Join(v, "bin", "python"); isFile(python) {
				return python
			}
		}
	}
	if python := os.Getenv("EVENTBUS_PYTHON"); python != "" {
		return python
	}
	return "python3"
}

// venvVersion is the Python version recorded in the pyvenv.cfg of the virtualenv that
// holds python (<venv>/bin/python), or "" when there is none.
func venvVersion(python string) string {
	data, err := os.ReadFile(filepath.Join(filepath.Dir(filepath.Dir(python)), "pyvenv.cfg"))
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(data), "\n") {
		if key, value, ok := strings.Cut(line, "="); ok && strings.TrimSpace(key) == "version" {
			return strings.TrimSpace(value)
		}
	}
	return ""
}

func isFile(path string) bool {
	st, err := os.Stat(path)
	return err == nil && !st.IsDir()
}

func (h *host) Handshake(_ context.Context, req *pulumirpc.LanguageHandshakeRequest) (*pulumirpc.LanguageHandshakeResponse, error) {
	if req.GetEngineAddress() != "" {
		h.engineAddress = req.GetEngineAddress()
	}
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *host) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version}, nil
}

func (h *host) GetRequiredPlugins(context.Context, *pulumirpc.GetRequiredPluginsRequest) (*pulumirpc.GetRequiredPluginsResponse, error) {
	return &pulumirpc.GetRequiredPluginsResponse{}, nil
}

func (h *host) GetRequiredPackages(context.Context, *pulumirpc.GetRequiredPackagesRequest) (*pulumirpc.GetRequiredPackagesResponse, error) {
	return &pulumirpc.GetRequiredPackagesResponse{}, nil
}

func (h *host) InstallDependencies(*pulumirpc.InstallDependenciesRequest, grpc.ServerStreamingServer[pulumirpc.InstallDependenciesResponse]) error {
	return nil
}

func (h *host) RuntimeOptionsPrompts(context.Context, *pulumirpc.RuntimeOptionsRequest) (*pulumirpc.RuntimeOptionsResponse, error) {
	return &pulumirpc.RuntimeOptionsResponse{}, nil
}

// About reports the interpreter and its version. The engine asks on every command, so the
// version comes from the virtualenv's pyvenv.cfg when there is one, without starting Python.
func (h *host) About(_ context.Context, req *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	python := pythonFor(req.GetInfo())
	h.startWarm(req.GetInfo(), python)
	if v := venvVersion(python); v != "" {
		return &pulumirpc.AboutResponse{Executable: python, Version: v}, nil
	}
	out, err := exec.Command(python, "-c", "import sys; print(sys.version.split()[0])").Output()
	if err != nil {
		return nil, fmt.Errorf("running %s: %w", python, err)
	}
	return &pulumirpc.AboutResponse{Executable: python, Version: strings.TrimSpace(string(out))}, nil
}

func (h *host) GetProgramDependencies(context.Context, *pulumirpc.GetProgramDependenciesRequest) (*pulumirpc.GetProgramDependenciesResponse, error) {
	return &pulumirpc.GetProgramDependenciesResponse{}, nil
}

func (h *host) Cancel(context.Context, *emptypb.Empty) (*emptypb.Empty, error) {
	h.signalChildren(os.Interrupt)
	return &emptypb.Empty{}, nil
}

func (h *host) signalChildren(sig os.Signal) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for child := range h.children {
		_ = child.Process.Signal(sig)
	}
	for pid := range h.warmPids {
		_ = syscall.Kill(pid, sig.(syscall.Signal))
	}
}

// preloadNames is the programPreload option's module names, or nil when the option is unset, warm
// programs are off (EVENTBUS_WARM=0), or this host stands in for the official one.
func preloadNames(info *pulumirpc.ProgramInfo) []string {
	if warmOff() || info == nil {
		return nil
	}
	return strings.Fields(strings.ReplaceAll(info.GetOptions().GetFields()[programPreloadOption].GetStringValue(), ",", " "))
}

// programDir is the directory whose __main__.py (or the entry point's) the program runs.
func programDir(info *pulumirpc.ProgramInfo) string {
	dir := info.GetProgramDirectory()
	if dir == "" {
		dir = info.GetRootDirectory()
	}
	return dir
}

// warmPath is the socket of the warm program for this engine and this program: the same
// engine (the parent of every host it starts for one command), interpreter, directories, exec
// script, modules and working directory. Anything else gets another path, so a warm program is
// only ever handed a run it was started for.
func (h *host) warmPath(info *pulumirpc.ProgramInfo, python string, names []string) string {
	return filepath.Join(os.TempDir(), fmt.Sprintf("eventbus-program-%d-%x.sock", os.Getppid(), h.programDigest(info, python, names)))
}

// residentPath is the socket of the resident for this user and program: what warmPath digests,
// without the engine. The program script is not part of it: a resident started by another
// version of this host refuses it (scriptDigest) and leaves, and the new one takes its path.
func (h *host) residentPath(info *pulumirpc.ProgramInfo, python string, names []string) string {
	return filepath.Join(os.TempDir(), fmt.Sprintf("eventbus-resident-%d-%x.sock", os.Getuid(), h.programDigest(info, python, names)))
}

// programDigest names the program a warm program or a resident is prepared for: this host's
// version, the interpreter, the directories, the entry point, the working directory, the exec
// script and the modules.
func (h *host) programDigest(info *pulumirpc.ProgramInfo, python string, names []string) []byte {
	cwd, _ := os.Getwd()
	sum := sha256.Sum256([]byte(strings.Join([]string{
		version, python, info.GetRootDirectory(), programDir(info), info.GetEntryPoint(), cwd, h.execScript,
		strings.Join(names, " "),
	}, "\x00")))
	return sum[:8]
}

// scriptDigest names this host's programScript: a resident serves only the hosts of its own.
func scriptDigest() string {
	sum := sha256.Sum256([]byte(programScript))
	return fmt.Sprintf("%x", sum[:8])
}

// askResident asks the resident at path (program.py's _resident) to fork the warm program for this
// engine, listening on socket (at warm, the path runWarm dials): true when it did. It refuses when
// a file it loaded from changed since (it then leaves), or this host's environment, session or
// process settings are not its own (program.py's docstring lists when).
func askResident(resident string, socket *os.File, warm string) bool {
	if !ownSocket(resident) {
		return false
	}
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: resident, Net: "unix"})
	if err != nil {
		return false
	}
	defer conn.Close()
	environ := map[string]string{}
	for _, kv := range warmEnviron() {
		if k, v, found := strings.Cut(kv, "="); found {
			environ[k] = v
		}
	}
	cwd, _ := os.Getwd()
	body, err := json.Marshal(map[string]any{
		"path": warm, "engine": os.Getppid(), "environ": environ, "cwd": cwd, "script": scriptDigest()})
	if err != nil {
		return false
	}
	msg := binary.BigEndian.AppendUint32(nil, uint32(len(body)))
	msg = append(msg, body...)
	n, _, err := conn.WriteMsgUnix(msg, syscall.UnixRights(int(socket.Fd())), nil)
	if err == nil && n < len(msg) {
		_, err = conn.Write(msg[n:])
	}
	if err != nil {
		return false
	}
	_ = conn.SetReadDeadline(time.Now().Add(residentReplyTimeout))
	var reply struct {
		OK  bool `json:"ok"`
		Pid int  `json:"pid"`
	}
	line, err := bufio.NewReader(conn).ReadBytes('\n')
	if err != nil || json.Unmarshal(line, &reply) != nil || !reply.OK || reply.Pid <= 0 {
		return false
	}
	// The warm program takes the socket only on this word: one answering after the deadline
	// finds the connection closed instead, and leaves.
	_, err = conn.Write([]byte("go\n"))
	return err == nil
}

// startWarm starts, once, a program process that imports the programPreload modules now, while
// the engine still loads the stack, derives the secrets key and starts another host to run the
// program (about a third of a second for a preview), so that the run starts with them loaded.
// It runs in a process group of its own: the engine stops this host, and its group, right
// after About. It ends by itself when the engine is gone, or after program.py's WARM_IDLE
// unused (e.g. after `pulumi about`, which asks About and runs nothing). It is started without
// the engine's secrets (withheld), which the run brings.
//
// Unless the resident is off (residentOff), the resident an earlier command's warm program left
// (program.py says how) is asked first to fork the warm program, imports done; when there is
// none, or it refuses, the warm program started here leaves one for the next command.
func (h *host) startWarm(info *pulumirpc.ProgramInfo, python string) {
	names := preloadNames(info)
	h.mu.Lock()
	started := h.warmStarted
	h.warmStarted = true
	h.mu.Unlock()
	if len(names) == 0 || started {
		return
	}
	// The socket is there before this returns, so that a host that runs the program right after
	// (the update after a preview) finds it and waits for the imports, instead of starting cold.
	path := h.warmPath(info, python, names)
	_ = os.Remove(path)
	listener, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return
	}
	listener.SetUnlinkOnClose(false) // the warm program removes it, once it has accepted
	defer listener.Close()
	socket, err := listener.File()
	if err != nil || os.Chmod(path, 0o600) != nil {
		_ = os.Remove(path)
		return
	}
	defer socket.Close()
	resident := ""
	if !residentOff() {
		resident = h.residentPath(info, python, names)
		if askResident(resident, socket, path) {
			return
		}
	}
	cmd := exec.Command(python, "-u", "-c", programScript, "--warm", path, "3", strconv.Itoa(os.Getppid()),
		strings.Join(names, " "), programDir(info), resident, scriptDigest())
	cmd.ExtraFiles = []*os.File{socket} // descriptor 3
	cmd.Env = warmEnviron()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = os.Remove(path)
		return
	}
	go func() { _ = cmd.Wait() }()
}

// runWarm hands the run to the warm program startWarm started for it, and reports its end as
// Run reports a program's: ok is false when there is none, or it declined before running
// anything (then the program is started cold).
func (h *host) runWarm(info *pulumirpc.ProgramInfo, python string, argv []string, set map[string]string) (
	resp *pulumirpc.RunResponse, ok bool) {
	names := preloadNames(info)
	if len(names) == 0 {
		return nil, false
	}
	path := h.warmPath(info, python, names)
	if !ownSocket(path) {
		return nil, false
	}
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, false
	}
	defer conn.Close()
	environ := map[string]string{}
	for _, kv := range os.Environ() {
		if k, v, found := strings.Cut(kv, "="); found {
			environ[k] = v
		}
	}
	cwd, _ := os.Getwd()
	body, err := json.Marshal(map[string]any{"argv": argv, "set": set, "environ": environ, "cwd": cwd})
	if err != nil {
		return nil, false
	}
	msg := binary.BigEndian.AppendUint32(nil, uint32(len(body)))
	msg = append(msg, body...)
	n, _, err := conn.WriteMsgUnix(msg, syscall.UnixRights(int(os.Stdout.Fd()), int(os.Stderr.Fd())), nil)
	if err == nil && n < len(msg) {
		_, err = conn.Write(msg[n:])
	}
	if err != nil {
		return nil, false
	}
	_ = conn.SetReadDeadline(time.Now().Add(warmReplyTimeout))
	lines := bufio.NewReader(conn)
	var reply struct { // program.py's answer, then its exit ({"why": ...} of a refusal is for people)
		OK   bool `json:"ok"`
		Pid  int  `json:"pid"`
		Exit *int `json:"exit"`
	}
	line, err := lines.ReadBytes('\n')
	if err != nil || json.Unmarshal(line, &reply) != nil || !reply.OK || reply.Pid <= 0 {
		return nil, false
	}
	_ = conn.SetReadDeadline(time.Time{})
	h.mu.Lock()
	h.warmPids[reply.Pid] = struct{}{}
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.warmPids, reply.Pid)
		h.mu.Unlock()
	}()
	for {
		line, err := lines.ReadBytes('\n')
		if err != nil {
			return exited(-1), true // gone without saying how: killed by a signal, as a cold program's -1
		}
		reply.Exit = nil
		if json.Unmarshal(line, &reply) == nil && reply.Exit != nil {
			return exited(*reply.Exit), true
		}
	}
}

// ownSocket is true when the socket file at path belongs to this host's user: only that user (or
// root) can have made it, or replace it in a sticky temporary directory.
func ownSocket(path string) bool {
	info, err := os.Lstat(path)
	if err != nil || info.Mode()&os.ModeSocket == 0 {
		return false
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Getuid()
}

// Run runs the program, and after a preview that an update follows (`pulumi up`), starts the
// warm program that update's host will hand its run to (startWarm): the About that started the
// preview's was asked once for the command. The host that ran the preview is the last one to
// know the program is about to run again; an operator confirming the update gives the warm
// program all the time it needs.
func (h *host) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	resp, err := h.runProgram(ctx, req)
	if err == nil && req.GetDryRun() && resp.GetError() == "" && !resp.GetBail() && engineRunsUp() {
		h.startWarm(req.GetInfo(), pythonFor(req.GetInfo()))
	}
	return resp, err
}

// engineRunsUp is true when the engine that started this host runs `pulumi up`: its command line
// names the command, `up` or its alias `update`. A stack or directory of that name starts a warm
// program for nothing, which ends with the engine.
func engineRunsUp() bool {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", os.Getppid()))
	if err != nil {
		return false
	}
	for _, arg := range strings.Split(string(cmdline), "\x00") {
		if arg == "up" || arg == "update" {
			return true
		}
	}
	return false
}

func (h *host) runProgram(_ context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	info := req.GetInfo()
	args := []string{h.execScript}
	opt := func(name, value string) {
		if value != "" {
			args = append(args, "--"+name, value)
		}
	}
	opt("monitor", req.GetMonitorAddress())
	opt("engine", h.engineAddress)
	opt("project", req.GetProject())
	opt("stack", req.GetStack())
	opt("pwd", req.GetPwd())
	opt("dry_run", strconv.FormatBool(req.GetDryRun()))
	opt("parallel", strconv.Itoa(int(req.GetParallel())))
	opt("organization", req.GetOrganization())
	opt("root_directory", info.GetRootDirectory())
	program := req.GetProgram()
	if program == "" {
		program = info.GetEntryPoint()
	}
	if program == "" {
		program = "."
	}
	if info.GetProgramDirectory() != "" && !filepath.IsAbs(program) {
		program = filepath.Join(info.GetProgramDirectory(), program)
	}
	args = append(args, program)
	args = append(args, req.GetArgs()...)

	stackConfig := req.GetConfig()
	if stackConfig == nil {
		stackConfig = map[string]string{} // a stack without config: the SDK reads an object, not null
	}
	config, err := json.Marshal(stackConfig)
	if err != nil {
		return nil, err
	}
	secretKeys := req.GetConfigSecretKeys()
	if secretKeys == nil {
		secretKeys = []string{}
	}
	secrets, err := json.Marshal(secretKeys)
	if err != nil {
		return nil, err
	}
	if options := info.GetOptions().GetFields(); !asOfficial() && options[preloadOption].GetStringValue() != "" {
		token := prestartToken
		if !req.GetDryRun() && options[preloadUpdateOption].GetStringValue() != "" {
			token = prestartUpdateToken
		}
		go prestartProvider(req.GetMonitorAddress(), token)
	}
	python := pythonFor(info)
	set := map[string]string{"PULUMI_CONFIG": string(config), "PULUMI_CONFIG_SECRET_KEYS": string(secrets)}
	if !asOfficial() && !engineShowsDebug() {
		set[debugLogsEnv] = "0"
	}
	if resp, ok := h.runWarm(info, python, args, set); ok {
		return resp, nil
	}
	if !asOfficial() {
		args = append([]string{"-c", programScript, "--cold"}, args...)
	}
	cmd := exec.Command(python, append([]string{"-u"}, args...)...)
	cmd.Env = os.Environ()
	for key, value := range set {
		cmd.Env = append(cmd.Env, key+"="+value)
	}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}
	h.mu.Lock()
	h.children[cmd] = struct{}{}
	h.mu.Unlock()
	err = cmd.Wait()
	h.mu.Lock()
	delete(h.children, cmd)
	h.mu.Unlock()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return exited(0), nil
	case errors.As(err, &exit):
		return exited(exit.ExitCode()), nil
	default:
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}
}

// debugLogsEnv, set to 0 in the program's environment, tells program.py that the engine neither
// shows nor records debug-level logs, so the program does not send those it would send without a
// resource (the SDK's four per resource, each an RPC the engine then drops).
const debugLogsEnv = "EVENTBUS_DEBUG_LOGS"

// engineShowsDebug is true when the engine that started this host may show or record the
// program's debug logs: its command line has --debug, --verbose, --event-log, --logflow or
// --logtostderr, or a short flag group with d or v (-d, -v=9), or the environment sets one of
// those flags (PULUMI_OPTION_*) or logs the gRPC traffic (PULUMI_DEBUG_GRPC). When the command
// line cannot be read, it is true.
func engineShowsDebug() bool {
	for _, key := range []string{"PULUMI_OPTION_DEBUG", "PULUMI_OPTION_VERBOSE", "PULUMI_OPTION_EVENT_LOG",
		"PULUMI_OPTION_LOGFLOW", "PULUMI_OPTION_LOGTOSTDERR", "PULUMI_DEBUG_GRPC"} {
		if os.Getenv(key) != "" {
			return true
		}
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", os.Getppid()))
	if err != nil {
		return true
	}
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	for _, arg := range args[1:] {
		switch {
		case arg == "--":
			return false // the program's own arguments follow
		case strings.HasPrefix(arg, "--"):
			name, _, _ := strings.Cut(arg[2:], "=")
			switch name {
			case "debug", "verbose", "event-log", "logflow", "logtostderr":
				return true
			}
		case strings.HasPrefix(arg, "-") && strings.ContainsAny(arg, "dv"):
			return true
		}
	}
	return false
}

// exited is Run's answer for a program that exited with code (-1: killed by a signal), cold or warm.
func exited(code int) *pulumirpc.RunResponse {
	switch code {
	case 0:
		return &pulumirpc.RunResponse{}
	case exitBail:
		return &pulumirpc.RunResponse{Bail: true}
	default:
		return &pulumirpc.RunResponse{Error: fmt.Sprintf("Program exited with non-zero exit code: %d", code)}
	}
}

// prestartProvider asks the engine, through the resource monitor the program is about to use,
// for an Invoke in the dynamic provider's package, and ignores the answer. The engine starts
// the provider process to ask, so the provider's interpreter, the SDK and the preloaded
// modules load while the program imports and reads its config (half a second or more),
// instead of after the program's first resource; its resources then reach a provider that is
// up, the same process (the engine keeps one default provider per package).
func prestartProvider(monitor, token string) {
	conn, err := grpc.NewClient(monitor, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, _ = pulumirpc.NewResourceMonitorClient(conn).Invoke(ctx, &pulumirpc.ResourceInvokeRequest{Tok: token})
}

// watchEngine exits, taking the program with it, once the engine that started this host
// is gone: the engine is the direct parent, so a new parent means it died (a SIGKILLed
// engine leaves its plugins running otherwise).
func (h *host) watchEngine(engine int) {
	for range time.Tick(pollInterval) {
		if os.Getppid() != engine {
			h.signalChildren(os.Kill)
			os.Exit(0)
		}
	}
}

func main() {
	var engineAddress string
	for _, arg := range os.Args[1:] {
		if !strings.HasPrefix(arg, "-") {
			engineAddress = arg
			break
		}
	}
	execScript := os.Getenv("PULUMI_LANGUAGE_PYTHON_EXEC")
	if execScript == "" {
		fmt.Fprintln(os.Stderr, "pulumi-language-python: PULUMI_LANGUAGE_PYTHON_EXEC is not set (run it through the wrapper scripts/toolchain.sh installs)")
		os.Exit(1)
	}
	h := &host{engineAddress: engineAddress, execScript: execScript, children: map[*exec.Cmd]struct{}{},
		warmPids: map[int]struct{}{}}
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "pulumi-language-python:", err)
		os.Exit(1)
	}
	server := grpc.NewServer(grpc.MaxRecvMsgSize(400 * 1024 * 1024))
	pulumirpc.RegisterLanguageRuntimeServer(server, h)
	fmt.Println(listener.Addr().(*net.TCPAddr).Port)
	if !asOfficial() {
		go h.watchEngine(os.Getppid())
	}
	// The engine stops plugins with SIGINT (then SIGKILL): shut down quietly.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-stop
		server.Stop()
	}()
	_ = server.Serve(listener)
}
