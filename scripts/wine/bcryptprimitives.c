/*
 * A stand-in for Windows's bcryptprimitives.dll, for the Wine smoke test
 * only (scripts/windows-check): Rust's standard library imports ProcessPrng
 * from it, and Debian's Wine 8.0 does not provide the DLL. Never shipped.
 */
#include <windows.h>

/* RtlGenRandom, exported by advapi32 as SystemFunction036. */
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG n = length > 0x7fffffff ? 0x7fffffff : (ULONG)length;
        if (!SystemFunction036(data, n))
            return FALSE;
        data += n;
        length -= n;
    }
    return TRUE;
}
