#include "attestation/evidence/format.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/util/json_util.h>
#include <tss2/tss2_tpm2_types.h>

#include <cstring>

namespace sovguard::attestation::evidence {

Sha256Digest QualifyingData(std::span<const uint8_t> nonce, const Sha256Digest& snapshot_sha256) {
  if (nonce.size() < kMinNonce || nonce.size() > kMaxNonce)
    throw AttestationError("nonce must be " + std::to_string(kMinNonce) + ".." +
                           std::to_string(kMaxNonce) + " bytes, got " +
                           std::to_string(nonce.size()));
  Bytes msg(kQualifyingLabel.begin(), kQualifyingLabel.end());
  msg.push_back(0);
  PutBe(msg, nonce.size(), 4);
  msg.insert(msg.end(), nonce.begin(), nonce.end());
  msg.insert(msg.end(), snapshot_sha256.begin(), snapshot_sha256.end());
  return Sha256(msg);
}

std::string SerializeSnapshot(const v1::EnforcementSnapshot& snapshot) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream sos(&out);
    google::protobuf::io::CodedOutputStream cos(&sos);
    cos.SetSerializationDeterministic(true);
    if (!snapshot.SerializeToCodedStream(&cos))
      throw AttestationError("cannot serialize the enforcement snapshot");
  }
  return out;
}

std::string ToJson(const google::protobuf::Message& msg) {
  std::string out;
  google::protobuf::util::JsonPrintOptions opts;
  opts.add_whitespace = true;
  opts.preserve_proto_field_names = true;
  auto st = google::protobuf::util::MessageToJsonString(msg, &out, opts);
  if (!st.ok()) throw AttestationError("JSON rendering failed: " + st.ToString());
  return out;
}

void FromJson(std::string_view json, google::protobuf::Message& msg) {
  google::protobuf::util::JsonParseOptions opts;
  opts.ignore_unknown_fields = false;  // a field we do not know is an error, not ignored
  auto st = google::protobuf::util::JsonStringToMessage(std::string(json), &msg, opts);
  if (!st.ok()) throw AttestationError("evidence JSON: " + st.ToString());
}

std::vector<std::string> ExportForCheckquote(const v1::Evidence& ev,
                                             const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  const auto& q = ev.quote();
  if (q.attest().empty() || q.signature().empty() || ev.ak().public_pem().empty())
    throw AttestationError("evidence has no quote, signature or AK public key");
  WriteFileAtomic(dir / "ak.pem", ev.ak().public_pem());
  WriteFileAtomic(dir / "quote.msg", q.attest());
  WriteFileAtomic(dir / "quote.sig", q.signature());
  // tpm2-tools' "serialized" PCR file (what tpm2_quote -o writes): the host-endian C structs
  // TPML_PCR_SELECTION, UINT32 number of lists, then TPML_DIGEST lists of at most 8 digests in
  // ascending PCR order. (The -l selection-string variant mishandles more than 7 PCRs in 5.4.)
  TPML_PCR_SELECTION sel{};
  sel.count = 1;
  sel.pcrSelections[0].hash = TPM2_ALG_SHA256;
  sel.pcrSelections[0].sizeofSelect = 3;
  std::vector<TPML_DIGEST> lists;
  for (int i = 0; i < q.pcrs_size(); ++i) {
    const auto& p = q.pcrs(i);
    if (p.sha256().size() != 32)
      throw AttestationError("quote.pcrs[" + std::to_string(i) + "].sha256 is not 32 bytes");
    if (p.index() > 23 || (i > 0 && p.index() <= q.pcrs(i - 1).index()))
      throw AttestationError("quote.pcrs must be PCRs 0-23 in ascending index order");
    sel.pcrSelections[0].pcrSelect[p.index() / 8] |= static_cast<uint8_t>(1u << (p.index() % 8));
    if (lists.empty() || lists.back().count == 8) lists.push_back(TPML_DIGEST{});
    auto& d = lists.back().digests[lists.back().count++];
    d.size = 32;
    std::memcpy(d.buffer, p.sha256().data(), 32);
  }
  std::string pcrs(reinterpret_cast<const char*>(&sel), sizeof sel);
  const auto nlists = static_cast<uint32_t>(lists.size());
  pcrs.append(reinterpret_cast<const char*>(&nlists), sizeof nlists);
  for (const auto& l : lists) pcrs.append(reinterpret_cast<const char*>(&l), sizeof l);
  WriteFileAtomic(dir / "quote.pcrs", pcrs);
  const std::string qhex = ToHex(std::span(
      reinterpret_cast<const uint8_t*>(q.qualifying_data().data()), q.qualifying_data().size()));
  WriteFileAtomic(dir / "qualifying.hex", qhex);
  return {"-u", (dir / "ak.pem").string(),
          "-m", (dir / "quote.msg").string(),
          "-s", (dir / "quote.sig").string(),
          "-f", (dir / "quote.pcrs").string(),
          "-g", "sha256",
          "-q", qhex};
}

}  // namespace sovguard::attestation::evidence
