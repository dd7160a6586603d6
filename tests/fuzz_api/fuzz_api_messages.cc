// The messages sovguardd's local APIs accept from other processes: libvirt qemu hook frames (read
// off a socket exactly as the hook server does, then decoded) and the attestation service's gRPC
// request protos (binary and JSON). The first input byte picks the message; the rest is its bytes.
//
// Properties beyond "no crash": decoders fail only with the documented exception type; whatever
// decodes re-encodes to something that decodes to the same value (what the daemon logs or
// answers is what it understood).
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <iterator>
#include <stdexcept>
#include <string>
#include <string_view>

#include "attestation/service/attestation_service.pb.h"
#include "enforcer/libvirt/hook_protocol.h"

namespace lv = sovguard::libvirt;
namespace v1 = sovguard::attestation::v1;

namespace {

[[noreturn]] void Violated(const char* what) {
  std::fprintf(stderr, "fuzz_api_messages: property violated: %s\n", what);
  std::abort();
}

// The hook server's read path: bytes arrive on a stream socket, ReadFrame cuts one frame (4-byte
// big-endian length), DecodeRequest parses it. The peer half-closes after writing, so a short
// frame ends in "peer closed", never in a wait.
void HookServerSide(std::string_view bytes) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return;
  const int buf = 1 << 20;
  ::setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
  ::fcntl(sv[0], F_SETFL, O_NONBLOCK);
  std::size_t off = 0;
  while (off < bytes.size()) {  // what does not fit in the socket buffer is simply not sent
    const ssize_t n = ::send(sv[0], bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n <= 0) break;
    off += static_cast<std::size_t>(n);
  }
  ::shutdown(sv[0], SHUT_WR);
  try {
    const std::string frame =
        lv::ReadFrame(sv[1], std::chrono::steady_clock::now() + std::chrono::milliseconds(200));
    if (frame.empty() || frame.size() > lv::kMaxHookFrame) Violated("ReadFrame size bounds");
    const lv::HookRequest req = lv::DecodeRequest(frame);
    if (lv::DecodeRequest(lv::EncodeRequest(req)) != req) Violated("hook request round trip");
    (void)lv::IsBlockingOperation(req.op, req.sub);
  } catch (const std::runtime_error&) {
    // The documented failure: the server answers ok:false (or drops the connection).
  }
  ::close(sv[0]);
  ::close(sv[1]);
}

void HookClientSide(std::string_view bytes) {
  try {
    const lv::HookResponse r = lv::DecodeResponse(bytes);
    if (lv::DecodeResponse(lv::EncodeResponse(r)) != r) Violated("hook response round trip");
  } catch (const std::runtime_error&) {
  }
}

template <typename Message>
void Proto(std::string_view bytes) {
  Message m;
  if (m.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    Message again;
    if (!again.ParseFromString(m.SerializeAsString()) ||
        !google::protobuf::util::MessageDifferencer::Equals(m, again))
      Violated("proto binary round trip");
    m.DiscardUnknownFields();  // JSON has no place for them; the service never reads them
    std::string json;
    if (!google::protobuf::util::MessageToJsonString(m, &json).ok())
      Violated("proto -> JSON of a parsed message");
    Message from_json;
    if (!google::protobuf::util::JsonStringToMessage(json, &from_json).ok() ||
        !google::protobuf::util::MessageDifferencer::Equals(m, from_json))
      Violated("proto JSON round trip");
  }
  // The same bytes as JSON (sovguardctl and tests speak JSON to and about these messages).
  Message j;
  (void)google::protobuf::util::JsonStringToMessage(
      google::protobuf::StringPiece(bytes.data(), bytes.size()), &j);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);
  // The first byte picks the parser.
  using Target = void (*)(std::string_view);
  static constexpr Target kTargets[] = {
      HookServerSide,
      HookClientSide,
      Proto<v1::QuoteRequest>,
      Proto<v1::ActivateCredentialRequest>,
      Proto<v1::IdentityRequest>,
      Proto<v1::ActivateCredentialResponse>,
  };
  kTargets[data[0] % std::size(kTargets)](bytes);
  return 0;
}
