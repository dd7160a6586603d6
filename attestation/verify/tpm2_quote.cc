// A quote made by tpm2_quote(1), checked without sovguard evidence.
#include "attestation/verify/checks.h"

#include <tss2/tss2_mu.h>

#include <cstring>

namespace sovguard::attestation::verify {

using namespace detail;  // NOLINT(google-build-using-namespace): the checks

v1::TpmQuote ParseTpm2ToolsPcrs(std::span<const uint8_t> data) {
  // Host-endian C structs, as tpm2-tools writes them: TPML_PCR_SELECTION, UINT32 number of
  // lists, then that many TPML_DIGEST, filled in selection order (ascending PCR per bank).
  TPML_PCR_SELECTION sel{};
  uint32_t nlists = 0;
  if (data.size() < sizeof sel + sizeof nlists)
    throw InputError("PCR file: shorter than a TPML_PCR_SELECTION and a list count");
  std::memcpy(&sel, data.data(), sizeof sel);
  std::memcpy(&nlists, data.data() + sizeof sel, sizeof nlists);
  if (sel.count != 1 || sel.pcrSelections[0].hash != TPM2_ALG_SHA256 ||
      sel.pcrSelections[0].sizeofSelect > sizeof sel.pcrSelections[0].pcrSelect)
    throw InputError("PCR file: expected exactly one selection, of the SHA-256 bank");
  const size_t need = sizeof sel + sizeof nlists + size_t{nlists} * sizeof(TPML_DIGEST);
  if (nlists > 64 || data.size() != need)
    throw InputError("PCR file: " + std::to_string(data.size()) + " bytes, expected " +
                     std::to_string(need) + " for " + std::to_string(nlists) + " digest lists");
  std::vector<TPML_DIGEST> lists(nlists);
  if (nlists)
    std::memcpy(lists.data(), data.data() + sizeof sel + sizeof nlists,
                nlists * sizeof(TPML_DIGEST));
  v1::TpmQuote q;
  q.set_pcr_bank("sha256");
  size_t li = 0, di = 0;
  const auto& s = sel.pcrSelections[0];
  for (uint32_t pcr = 0; pcr < 8u * s.sizeofSelect; ++pcr) {
    if (!(s.pcrSelect[pcr / 8] & (1u << (pcr % 8)))) continue;
    if (pcr > 23) throw InputError("PCR file: PCR " + std::to_string(pcr) + " is not 0-23");
    while (li < lists.size() && di >= std::min<uint32_t>(lists[li].count, 8)) ++li, di = 0;
    if (li >= lists.size()) throw InputError("PCR file: fewer digests than selected PCRs");
    const auto& d = lists[li].digests[di++];
    if (d.size != 32) throw InputError("PCR file: PCR " + std::to_string(pcr) + " is not 32 bytes");
    auto* p = q.add_pcrs();
    p->set_index(pcr);
    p->set_sha256(std::string(reinterpret_cast<const char*>(d.buffer), 32));
  }
  return q;
}

Report VerifyTpm2Quote(const Tpm2QuoteFiles& files, const Options& opts) {
  if (!opts.ak_pub_pem) throw InputError("a tpm2_quote quote needs the AK public key (--ak-pub)");
  if (!opts.nonce) throw InputError("a tpm2_quote quote needs the expected nonce (--nonce)");
  auto key = LoadPem(*opts.ak_pub_pem);
  if (!key) throw InputError("--ak-pub is not a PEM public key");
  v1::TpmQuote q = ParseTpm2ToolsPcrs(U8(files.pcrs));
  Report rep;
  rep.node = "tpm2_quote";
  auto& out = rep.checks;
  TPMS_ATTEST attest{};
  size_t off = 0;
  const bool attest_ok = Tss2_MU_TPMS_ATTEST_Unmarshal(U8(files.attest).data(), files.attest.size(),
                                                       &off, &attest) == TSS2_RC_SUCCESS &&
                         off == files.attest.size() && attest.magic == TPM2_GENERATED_VALUE &&
                         attest.type == TPM2_ST_ATTEST_QUOTE;
  if (attest_ok)
    out.push_back(Pass("quote.structure", "TPM2_ST_ATTEST_QUOTE"));
  else
    out.push_back(Fail("quote.structure", kReasonQuoteMalformed,
                       "the message file is not one marshalled TPM-generated quote"));
  out.push_back(CheckSignature(files.attest, files.signature, key.get(), "--ak-pub"));
  const bool sig_ok = out.back().status == Status::kPass;
  if (!attest_ok)
    out.push_back(Fail("nonce", kReasonDependencyFailed, "the quote could not be parsed"));
  else if (Bytes(attest.extraData.buffer, attest.extraData.buffer + attest.extraData.size) !=
           *opts.nonce)
    out.push_back(Fail("nonce", kReasonNonceMismatch,
                       "extraData " +
                           ToHex(std::span(attest.extraData.buffer, attest.extraData.size)) +
                           ", expected " + ToHex(*opts.nonce)));
  else if (!sig_ok)
    out.push_back(Fail("nonce", kReasonDependencyFailed, "the quote is not signed by the AK"));
  else
    out.push_back(Pass("nonce", ToHex(*opts.nonce)));
  out.push_back(CheckPcrDigest(q, attest_ok ? &attest : nullptr));
  return rep;
}

}  // namespace sovguard::attestation::verify
