// Segment.cs: segment a raw uint8 stack through the C ABI from C# (P/Invoke).
//
//   mcs Segment.cs -out:Segment.exe        (or any .NET SDK: the same source)
//   LD_LIBRARY_PATH=$(python -m tpem_seg_cpp --lib-dir) mono Segment.exe PACKAGE.tpem IN.raw Z Y X OUT.raw
//
// IN.raw: C-contiguous (Z, Y, X) uint8 voxels; OUT.raw: uint8 labels (Z, Y, X). Exit 2 with
// libtpem's one-line message on an error.
using System;
using System.IO;
using System.Runtime.InteropServices;
using System.Text;

static class Tpem {
    [DllImport("tpem")] public static extern uint tpem_abi_version();
    [DllImport("tpem")] public static extern UIntPtr tpem_last_error(byte[] buf, UIntPtr len);
    [DllImport("tpem")] public static extern int tpem_model_open(string dir, string options, out IntPtr model);
    [DllImport("tpem")] public static extern void tpem_model_close(IntPtr model);
    [DllImport("tpem")] public static extern int tpem_segment(IntPtr model, byte[] data, int dtype, long[] shapeCzyx,
        double[] spacingZyx, int output, [Out] byte[] labels, UIntPtr outBytes, Progress progress, IntPtr user);

    // nonzero cancels the run
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)] public delegate int Progress(double fraction, IntPtr user);

    public static string LastError() {
        var buf = new byte[1024];
        int n = (int)tpem_last_error(buf, (UIntPtr)buf.Length);
        return Encoding.UTF8.GetString(buf, 0, Math.Min(n, buf.Length - 1));
    }
}

static class Segment {
    static int Main(string[] args) {
        if (args.Length != 6) {
            Console.Error.WriteLine("usage: Segment.exe PACKAGE IN.raw Z Y X OUT.raw");
            return 2;
        }
        long[] shape = { 1, long.Parse(args[2]), long.Parse(args[3]), long.Parse(args[4]) };
        byte[] stack = File.ReadAllBytes(args[1]);
        byte[] labels = new byte[stack.Length];
        IntPtr model;
        if (Tpem.tpem_model_open(args[0], "{\"threads\": 2}", out model) != 0) {
            Console.Error.WriteLine("Segment: open: " + Tpem.LastError());
            return 2;
        }
        try {
            // Arrays of blittable types are pinned for the call by the marshaller; null spacing: the model's.
            Tpem.Progress progress = (fraction, user) => 0;
            int status = Tpem.tpem_segment(model, stack, 0 /* U8 */, shape, null, 0 /* labels */, labels,
                                           (UIntPtr)labels.Length, progress, IntPtr.Zero);
            if (status != 0) {
                Console.Error.WriteLine("Segment: segment: " + Tpem.LastError());
                return 2;
            }
        } finally {
            Tpem.tpem_model_close(model);
        }
        File.WriteAllBytes(args[5], labels);
        Console.WriteLine("libtpem ABI " + Tpem.tpem_abi_version() + ": " + labels.Length + " labels written");
        return 0;
    }
}
