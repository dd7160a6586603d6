// Evidence parsing: JSON or binary protobuf, optionally keeping logs.cel in the caller's buffer.
#include "attestation/verify/checks.h"

#include <google/protobuf/io/coded_stream.h>

#include <algorithm>

#include "attestation/evidence/format.h"

namespace sovguard::attestation::verify {

using namespace detail;  // NOLINT(google-build-using-namespace): the checks

namespace {

// What ParseEvidence refuses before parsing; true for the JSON rendering.
bool EvidenceIsJson(std::span<const uint8_t> data) {
  if (data.empty()) throw InputError("evidence is empty");
  // Far above any real evidence (a 10,000-entry CEL is ~1.5 MB); also keeps the int cast safe.
  if (data.size() > (256u << 20))
    throw InputError("evidence is " + std::to_string(data.size()) + " bytes (limit 256 MiB)");
  auto first = std::find_if(data.begin(), data.end(), [](uint8_t c) {
    return c != ' ' && c != '\n' && c != '\r' && c != '\t';
  });
  return first != data.end() && *first == '{';
}

// Structural minimum of format version 1: without these there is nothing to verify.
void CheckEvidenceShape(const v1::Evidence& ev) {
  if (ev.format_version() != evidence::kFormatVersion)
    throw InputError("evidence format_version is " + std::to_string(ev.format_version()) +
                     " (this verifier reads version " + std::to_string(evidence::kFormatVersion) +
                     ")");
  if (!ev.has_quote() || ev.quote().attest().empty() || ev.quote().signature().empty())
    throw InputError("evidence has no quote (quote.attest / quote.signature missing)");
  if (!ev.has_ak()) throw InputError("evidence has no AK (field ak missing)");
  if (!ev.has_logs()) throw InputError("evidence has no event logs (field logs missing)");
}

// Calls f(number, wire_type, tag_at, value_at, end) for every field of the serialized message
// data[begin, end) (value_at: after a length prefix). False for anything but well-formed plain
// fields (groups, a field running past the end, tag 0) or when f returns false.
template <typename F>
bool ForEachField(std::span<const uint8_t> data, size_t begin, size_t end, F&& f) {
  google::protobuf::io::CodedInputStream in(data.data() + begin, static_cast<int>(end - begin));
  for (;;) {
    const size_t tag_at = begin + static_cast<size_t>(in.CurrentPosition());
    const uint32_t tag = in.ReadTag();
    if (tag == 0) return in.ConsumedEntireMessage();
    size_t value_at = begin + static_cast<size_t>(in.CurrentPosition());
    uint64_t v = 0;
    uint32_t n = 0;
    switch (tag & 7) {
      case 0:
        if (!in.ReadVarint64(&v)) return false;
        break;
      case 1:
        if (!in.Skip(8)) return false;
        break;
      case 2:
        if (!in.ReadVarint32(&n) || n > INT32_MAX) return false;
        value_at = begin + static_cast<size_t>(in.CurrentPosition());
        if (!in.Skip(static_cast<int>(n))) return false;
        break;
      case 5:
        if (!in.Skip(4)) return false;
        break;
      default:
        return false;
    }
    if (!f(tag >> 3, tag & 7, tag_at, value_at, begin + static_cast<size_t>(in.CurrentPosition())))
      return false;
  }
}

// Binary Evidence with logs.cel left in `data`: every other field is merged into `ev` as
// protobuf parses it (parsing serialized fields one run after another is merging them), and
// the last logs.cel (as protobuf keeps the last) is returned as a view. False when the bytes
// are not plain well-formed fields: the caller then parses them whole, which says why.
bool ParseKeepingCel(std::span<const uint8_t> data, v1::Evidence& ev,
                     std::optional<std::span<const uint8_t>>& cel) {
  constexpr uint32_t kLengthDelimited = 2;
  auto merge = [&data](google::protobuf::MessageLite& m, size_t from, size_t to) {
    if (from == to) return true;
    google::protobuf::io::CodedInputStream in(data.data() + from, static_cast<int>(to - from));
    return m.MergeFromCodedStream(&in) && in.ConsumedEntireMessage();
  };
  size_t run = 0;  // start of the fields not merged yet
  const bool ok = ForEachField(
      data, 0, data.size(),
      [&](uint32_t number, uint32_t wire, size_t tag_at, size_t value_at, size_t end) {
        if (number != v1::Evidence::kLogsFieldNumber || wire != kLengthDelimited) return true;
        if (!merge(ev, run, tag_at)) return false;
        run = end;
        v1::EventLogs& logs = *ev.mutable_logs();
        size_t inner = value_at;
        return ForEachField(data, value_at, end,
                            [&](uint32_t n2, uint32_t w2, size_t t2, size_t v2, size_t e2) {
                              if (n2 != v1::EventLogs::kCelFieldNumber || w2 != kLengthDelimited)
                                return true;
                              if (!merge(logs, inner, t2)) return false;
                              inner = e2;
                              cel = data.subspan(v2, e2 - v2);
                              return true;
                            }) &&
               merge(logs, inner, end);
      });
  return ok && merge(ev, run, data.size());
}

}  // namespace

std::span<const uint8_t> EvidenceView::Cel() const {
  return cel ? *cel : U8(message.logs().cel());
}

v1::Evidence ParseEvidence(std::span<const uint8_t> data) {
  v1::Evidence ev;
  if (EvidenceIsJson(data)) {
    try {
      evidence::FromJson(Str(data), ev);
    } catch (const AttestationError& e) {
      throw InputError(e.what());
    }
  } else if (!ev.ParseFromArray(data.data(), static_cast<int>(data.size()))) {
    throw InputError("evidence is neither JSON nor a binary Evidence protobuf (truncated?)");
  }
  CheckEvidenceShape(ev);
  return ev;
}

EvidenceView ParseEvidenceView(std::span<const uint8_t> data) {
  EvidenceView view;
  if (!EvidenceIsJson(data) && ParseKeepingCel(data, view.message, view.cel)) {
    CheckEvidenceShape(view.message);
    return view;
  }
  view.cel.reset();
  view.message = ParseEvidence(data);
  return view;
}

}  // namespace sovguard::attestation::verify
