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
	"context"
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

// logFlushTimeout bounds the wait, at the program's end, for each debug log still in flight.
const logFlushTimeout = 10 * time.Second

// pollInterval is how often the host and the program check that their parent is still alive.
const pollInterval = 500 * time.Millisecond

// asOfficialEnv, set to 1 (tests only), makes this host stand in for the official one: it
// does not watch its engine, and it runs the exec script as is, without the prelude.
const asOfficialEnv = "EVENTBUS_HOST_AS_OFFICIAL"

// prelude wraps the SDK's exec script. An engine cancel (SIGINT) ends the program quietly
// instead of with a KeyboardInterrupt traceback, and the program exits when the host that
// started it is gone (e.g. after the engine was SIGKILLed).
//
// The SDK sends each debug-level log (four per resource: "registering resource", ...) as a
// blocking RPC from the program's one event-loop thread, about a millisecond each, shown only
// with --debug: the prelude sends those without waiting, and waits for them all at the end.
// Other severities, and logs tied to a resource, go through the SDK's own path unchanged.
//
// When the exec script is done (it ends with sys.exit, after waiting for every RPC and
// closing its event loop), the prelude flushes and leaves with os._exit: the interpreter's
// own teardown (module finalisation, the gRPC runtime's shutdown) adds 0.1-0.2 s to every
// command and does nothing the engine needs.
var prelude = fmt.Sprintf(`
import os, runpy, signal, sys, threading
signal.signal(signal.SIGINT, lambda *_: os._exit(%d))
_parent = os.getppid()
def _watch():
    while not threading.Event().wait(%g):
        if os.getppid() != _parent:
            os._exit(1)
threading.Thread(target=_watch, daemon=True).start()
import pulumi.log as _plog
from pulumi.runtime.proto import engine_pb2 as _epb
_sync_log, _sent = _plog._log, []
def _log(engine, severity, message, resource, stream_id, ephemeral):
    if severity != _epb.DEBUG or resource is not None or not hasattr(engine.Log, "future"):
        return _sync_log(engine, severity, message, resource, stream_id, ephemeral)
    if len(_sent) >= 512:
        _sent[:] = [f for f in _sent if not f.done()]
    _sent.append(engine.Log.future(_epb.LogRequest(
        severity=severity, message=message, urn="", streamId=stream_id or 0, ephemeral=ephemeral)))
_plog._log = _log
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
    _code = 0
except SystemExit as _exit:
    _code = _exit.code if isinstance(_exit.code, int) else int(_exit.code is not None)
    if isinstance(_exit.code, str):
        print(_exit.code, file=sys.stderr)
for _f in _sent:
    try:
        _f.result(timeout=%g)
    except Exception:
        pass
sys.stdout.flush()
sys.stderr.flush()
os._exit(_code)
`, exitBail, pollInterval.Seconds(), logFlushTimeout.Seconds())

func asOfficial() bool { return os.Getenv(asOfficialEnv) == "1" }

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

type host struct {
	pulumirpc.UnimplementedLanguageRuntimeServer
	engineAddress string
	execScript    string
	mu            sync.Mutex
	children      map[*exec.Cmd]struct{}
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
}

func (h *host) Run(_ context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	info := req.GetInfo()
	args := []string{"-u"}
	if !asOfficial() {
		args = append(args, "-c", prelude)
	}
	args = append(args, h.execScript)
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
	cmd := exec.Command(pythonFor(info), args...)
	cmd.Env = append(os.Environ(), "PULUMI_CONFIG="+string(config), "PULUMI_CONFIG_SECRET_KEYS="+string(secrets))
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
		return &pulumirpc.RunResponse{}, nil
	case errors.As(err, &exit) && exit.ExitCode() == exitBail:
		return &pulumirpc.RunResponse{Bail: true}, nil
	case errors.As(err, &exit):
		return &pulumirpc.RunResponse{Error: fmt.Sprintf("Program exited with non-zero exit code: %d", exit.ExitCode())}, nil
	default:
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
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
	h := &host{engineAddress: engineAddress, execScript: execScript, children: map[*exec.Cmd]struct{}{}}
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
