// grpc_probe: one raw gRPC call to smolvmd, printing the status code's name
// and message ("NOT_FOUND: vm \"x\" not found"), for end-to-end tests that
// need the exact code where smolvmctl only has an exit code, the exact RPC
// (smolvmctl looks a VM up with GetVm before Exec, ExposePort, file
// transfers), or a call smolvmctl will not make (TCP without a client
// certificate; the health and reflection services).
//
//   grpc_probe ENDPOINT METHOD [REQUEST_JSON] [--ca PEM]
//       [--cert PEM --key PEM] [--as-tenant TENANT]
//
// ENDPOINT is unix:/path or host:port (TLS, the server verified against
// --ca; a client certificate only with --cert/--key). METHOD is a VmService
// SnapshotService or unary FilesystemService / ProcessService method
// (ListVms, StatPath, StartProcess, GetVm, CreateVm, PauseVm, Exec,
// UploadFile, DownloadFile, ExposePort, CreateSnapshot, ...) with its
// request as protobuf JSON (UploadFile: the header; a few bytes of data
// follow), or Health (grpc.health.v1.Health/Check) or Reflection
// (ServerReflectionInfo list_services, v1alpha). Prints "CODE: message" and,
// for list calls, the ids found. Exit 0 once the call was made, whatever its
// status; 2 on usage errors.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <fstream>
#include <future>
#include <iostream>
#include <sstream>
#include <string>

#include "absl/status/status.h"
#include "google/protobuf/util/json_util.h"
#include "smolvm/v1/filesystem_service.grpc.pb.h"
#include "smolvm/v1/process_service.grpc.pb.h"
#include "smolvm/v1/snapshot_service.grpc.pb.h"
#include "smolvm/v1/vm_service.grpc.pb.h"

namespace {

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string CodeName(grpc::StatusCode code) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

void Deadline(grpc::ClientContext& ctx) {
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
}

grpc::Status Health(const std::shared_ptr<grpc::Channel>& channel, const std::string& tenant) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext ctx;
  Deadline(ctx);
  if (!tenant.empty()) ctx.AddMetadata("x-smolvm-tenant", tenant);
  grpc::ByteBuffer request, response;  // HealthCheckRequest{} is empty.
  grpc::Slice empty("");
  request = grpc::ByteBuffer(&empty, 1);
  std::promise<grpc::Status> done;
  stub.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                 [&done](grpc::Status s) { done.set_value(s); });
  return done.get_future().get();
}

// Waits for `tag` on `cq` (other tags of the same call may come first).
bool WaitFor(grpc::CompletionQueue& cq, void* tag) {
  void* got = nullptr;
  bool ok = false;
  while (true) {
    auto r = cq.AsyncNext(&got, &ok, std::chrono::system_clock::now() + std::chrono::seconds(10));
    if (r != grpc::CompletionQueue::GOT_EVENT) return false;
    if (got == tag) return ok;
  }
}

grpc::Status Reflection(const std::shared_ptr<grpc::Channel>& channel, const std::string& tenant,
                        std::string* services) {
  grpc::GenericStub stub(channel);
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  Deadline(ctx);
  if (!tenant.empty()) ctx.AddMetadata("x-smolvm-tenant", tenant);
  auto call =
      stub.PrepareCall(&ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  void* const kStart = reinterpret_cast<void*>(1);
  void* const kWrite = reinterpret_cast<void*>(2);
  void* const kDone = reinterpret_cast<void*>(3);
  void* const kRead = reinterpret_cast<void*>(4);
  void* const kFinish = reinterpret_cast<void*>(5);
  call->StartCall(kStart);
  if (WaitFor(cq, kStart)) {
    // ServerReflectionRequest{list_services: "*"}: field 7, length 1.
    grpc::Slice slice(std::string("\x3a\x01*", 3));
    grpc::ByteBuffer request(&slice, 1);
    call->Write(request, kWrite);
    if (WaitFor(cq, kWrite)) {
      call->WritesDone(kDone);
      WaitFor(cq, kDone);
      grpc::ByteBuffer response;
      call->Read(&response, kRead);
      if (WaitFor(cq, kRead)) {
        std::vector<grpc::Slice> slices;
        if (response.Dump(&slices).ok()) {
          for (const auto& s : slices) services->append(s.begin(), s.end());
        }
      }
    }
  }
  grpc::Status status;
  call->Finish(&status, kFinish);
  WaitFor(cq, kFinish);
  cq.Shutdown();
  void* tag;
  bool ok;
  while (cq.Next(&tag, &ok)) {
  }
  return status;
}

}  // namespace

template <typename Stub, typename Request, typename Response>
grpc::Status Unary(Stub* stub,
                   grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&, Response*),
                   const std::string& json, const std::string& tenant, Response* response) {
  Request request;
  if (!json.empty() && !google::protobuf::util::JsonStringToMessage(json, &request).ok()) {
    return grpc::Status(grpc::StatusCode::INTERNAL, "grpc_probe: bad request JSON");
  }
  grpc::ClientContext ctx;
  Deadline(ctx);
  if (!tenant.empty()) ctx.AddMetadata("x-smolvm-tenant", tenant);
  return (stub->*method)(&ctx, request, response);
}

template <typename Request>
bool Parse(const std::string& json, Request* request) {
  return json.empty() || google::protobuf::util::JsonStringToMessage(json, request).ok();
}

grpc::Status Call(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                  const std::string& json, const std::string& tenant, std::string* detail) {
  using namespace smolvm::v1;
  auto vms = VmService::NewStub(channel);
  auto snaps = SnapshotService::NewStub(channel);
  auto fs = FilesystemService::NewStub(channel);
  auto procs = ProcessService::NewStub(channel);
  const grpc::Status bad(grpc::StatusCode::INTERNAL, "grpc_probe: bad request JSON");
  if (method == "ListVms") {
    ListVmsResponse r;
    auto s = Unary(vms.get(), &VmService::Stub::ListVms, json, tenant, &r);
    for (const auto& vm : r.vms()) *detail += " " + vm.vm_id();
    return s;
  }
  if (method == "ListSnapshots") {
    ListSnapshotsResponse r;
    auto s = Unary(snaps.get(), &SnapshotService::Stub::ListSnapshots, json, tenant, &r);
    for (const auto& x : r.snapshots()) *detail += " " + x.snapshot_id();
    return s;
  }
  Vm vm;
  if (method == "GetVm") return Unary(vms.get(), &VmService::Stub::GetVm, json, tenant, &vm);
  if (method == "CreateVm") return Unary(vms.get(), &VmService::Stub::CreateVm, json, tenant, &vm);
  if (method == "StartVm") return Unary(vms.get(), &VmService::Stub::StartVm, json, tenant, &vm);
  if (method == "StopVm") return Unary(vms.get(), &VmService::Stub::StopVm, json, tenant, &vm);
  if (method == "PauseVm") return Unary(vms.get(), &VmService::Stub::PauseVm, json, tenant, &vm);
  if (method == "ResumeVm") return Unary(vms.get(), &VmService::Stub::ResumeVm, json, tenant, &vm);
  if (method == "ExposePort") {
    return Unary(vms.get(), &VmService::Stub::ExposePort, json, tenant, &vm);
  }
  if (method == "UnexposePort") {
    return Unary(vms.get(), &VmService::Stub::UnexposePort, json, tenant, &vm);
  }
  if (method == "UpdateNetworkPolicy") {
    return Unary(vms.get(), &VmService::Stub::UpdateNetworkPolicy, json, tenant, &vm);
  }
  if (method == "SetLifetime") {
    return Unary(vms.get(), &VmService::Stub::SetLifetime, json, tenant, &vm);
  }
  if (method == "DeleteVm") {
    DeleteVmResponse r;
    return Unary(vms.get(), &VmService::Stub::DeleteVm, json, tenant, &r);
  }
  if (method == "StatPath") {
    StatPathResponse r;
    return Unary(fs.get(), &FilesystemService::Stub::StatPath, json, tenant, &r);
  }
  if (method == "ListDir") {
    ListDirResponse r;
    return Unary(fs.get(), &FilesystemService::Stub::ListDir, json, tenant, &r);
  }
  if (method == "MakeDir") {
    MakeDirResponse r;
    return Unary(fs.get(), &FilesystemService::Stub::MakeDir, json, tenant, &r);
  }
  if (method == "RemovePath") {
    RemovePathResponse r;
    return Unary(fs.get(), &FilesystemService::Stub::RemovePath, json, tenant, &r);
  }
  if (method == "RenamePath") {
    RenamePathResponse r;
    return Unary(fs.get(), &FilesystemService::Stub::RenamePath, json, tenant, &r);
  }
  if (method == "StartProcess") {
    ProcessInfo r;
    return Unary(procs.get(), &ProcessService::Stub::StartProcess, json, tenant, &r);
  }
  if (method == "ListProcesses") {
    ListProcessesResponse r;
    return Unary(procs.get(), &ProcessService::Stub::ListProcesses, json, tenant, &r);
  }
  if (method == "SignalProcess") {
    ProcessInfo r;
    return Unary(procs.get(), &ProcessService::Stub::SignalProcess, json, tenant, &r);
  }
  if (method == "WaitProcess") {
    ProcessInfo r;
    return Unary(procs.get(), &ProcessService::Stub::WaitProcess, json, tenant, &r);
  }
  if (method == "PingAgent") {
    PingAgentResponse r;
    return Unary(vms.get(), &VmService::Stub::PingAgent, json, tenant, &r);
  }
  if (method == "RestoreSnapshot") {
    return Unary(snaps.get(), &SnapshotService::Stub::RestoreSnapshot, json, tenant, &vm);
  }
  SnapshotInfo info;
  if (method == "GetSnapshot") {
    return Unary(snaps.get(), &SnapshotService::Stub::GetSnapshot, json, tenant, &info);
  }
  if (method == "CreateSnapshot") {
    return Unary(snaps.get(), &SnapshotService::Stub::CreateSnapshot, json, tenant, &info);
  }
  if (method == "DeleteSnapshot") {
    DeleteSnapshotResponse r;
    return Unary(snaps.get(), &SnapshotService::Stub::DeleteSnapshot, json, tenant, &r);
  }
  if (method == "ForkSnapshot") {
    ForkSnapshotResponse r;
    auto s = Unary(snaps.get(), &SnapshotService::Stub::ForkSnapshot, json, tenant, &r);
    for (const auto& x : r.results()) {
      *detail += " " + x.vm_id() + "=" + std::to_string(x.error_code());
    }
    return s;
  }
  grpc::ClientContext ctx;
  Deadline(ctx);
  if (!tenant.empty()) ctx.AddMetadata("x-smolvm-tenant", tenant);
  if (method == "Exec") {
    ExecRequest request;
    if (!Parse(json, &request)) return bad;
    auto reader = vms->Exec(&ctx, request);
    ExecResponse r;
    while (reader->Read(&r)) {
      if (r.has_stdout()) *detail += r.stdout();
    }
    return reader->Finish();
  }
  if (method == "ExecStream") {
    // The JSON is the ExecStreamStart; then "stolen\n" as stdin, closed.
    ExecStreamRequest start;
    if (!Parse(json, start.mutable_start())) return bad;
    auto stream = vms->ExecStream(&ctx);
    ExecStreamRequest input;
    input.set_stdin("stolen\n");
    ExecStreamRequest close;
    close.set_close_stdin(true);
    if (stream->Write(start) && stream->Write(input)) stream->Write(close);
    ExecResponse r;
    while (stream->Read(&r)) {
      if (r.has_stdout()) *detail += r.stdout();
      if (r.has_exit()) stream->WritesDone();
    }
    return stream->Finish();
  }
  if (method == "DownloadFile") {
    DownloadFileRequest request;
    if (!Parse(json, &request)) return bad;
    auto reader = vms->DownloadFile(&ctx, request);
    DownloadFileResponse r;
    size_t bytes = 0;
    while (reader->Read(&r)) bytes += r.data().size();
    if (bytes > 0) *detail = " (" + std::to_string(bytes) + " bytes)";
    return reader->Finish();
  }
  if (method == "GetVmStats") {
    VmStats r;
    return Unary(vms.get(), &VmService::Stub::GetVmStats, json, tenant, &r);
  }
  if (method == "WatchVmStats") {
    WatchVmStatsRequest request;
    if (!Parse(json, &request)) return bad;
    auto reader = vms->WatchVmStats(&ctx, request);
    VmStats r;
    if (reader->Read(&r)) {
      *detail = " (a report)";
      ctx.TryCancel();
    }
    return reader->Finish();
  }
  if (method == "StreamConsole") {
    smolvm::v1::StreamConsoleRequest request;
    if (!Parse(json, &request)) return bad;
    auto reader = vms->StreamConsole(&ctx, request);
    smolvm::v1::ConsoleChunk r;
    size_t bytes = 0;
    while (reader->Read(&r)) bytes += r.data().size();
    if (bytes > 0) *detail = " (" + std::to_string(bytes) + " bytes)";
    return reader->Finish();
  }
  if (method == "UploadFile") {
    UploadFileRequest header;
    if (!Parse(json, header.mutable_header())) return bad;
    UploadFileResponse r;
    auto writer = vms->UploadFile(&ctx, &r);
    if (writer->Write(header)) {
      UploadFileRequest data;
      data.set_data("planted by grpc_probe\n");
      writer->Write(data);
    }
    writer->WritesDone();
    return writer->Finish();
  }
  if (method == "Health") return Health(channel, tenant);
  if (method == "Reflection") {
    std::string services;
    auto s = Reflection(channel, tenant, &services);
    if (services.find("smolvm.v1.VmService") != std::string::npos) *detail = " (lists VmService)";
    return s;
  }
  return grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "grpc_probe: unknown method " + method);
}

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: grpc_probe ENDPOINT METHOD [REQUEST_JSON] [--ca PEM] "
                 "[--cert PEM --key PEM] [--as-tenant T]\n";
    return 2;
  }
  std::string endpoint = argv[1], method = argv[2], json, ca, cert, key, tenant;
  int i = 3;
  if (i < argc && argv[i][0] != '-') json = argv[i++];
  for (; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--ca") {
      ca = argv[i + 1];
    } else if (flag == "--cert") {
      cert = argv[i + 1];
    } else if (flag == "--key") {
      key = argv[i + 1];
    } else if (flag == "--as-tenant") {
      tenant = argv[i + 1];
    } else {
      std::cerr << "grpc_probe: unknown flag " << flag << "\n";
      return 2;
    }
  }
  if (i != argc) {
    std::cerr << "grpc_probe: flag " << argv[i] << " needs a value\n";
    return 2;
  }
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (endpoint.rfind("unix:", 0) == 0) {
    creds = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = Slurp(ca);
    if (!cert.empty()) {
      ssl.pem_cert_chain = Slurp(cert);
      ssl.pem_private_key = Slurp(key);
    }
    creds = grpc::SslCredentials(ssl);
  }
  std::string detail;
  grpc::Status status = Call(grpc::CreateChannel(endpoint, creds), method, json, tenant, &detail);
  if (status.error_code() == grpc::StatusCode::INTERNAL &&
      status.error_message().rfind("grpc_probe:", 0) == 0) {
    std::cerr << status.error_message() << "\n";
    return 2;
  }
  if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED &&
      status.error_message().rfind("grpc_probe:", 0) == 0) {
    std::cerr << status.error_message() << "\n";
    return 2;
  }
  std::cout << CodeName(status.error_code()) << ": " << status.error_message() << detail << "\n";
  return 0;
}
