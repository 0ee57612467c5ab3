// Segment.java: segment a raw uint8 stack through the C ABI from Java, with JNA (Java 8 and later).
//
//   javac -cp /usr/share/java/jna.jar Segment.java
//   java -cp /usr/share/java/jna.jar:. -Djna.library.path=$(python -m tpem_seg_cpp --lib-dir) \
//        Segment PACKAGE.tpem IN.raw Z Y X OUT.raw
//
// IN.raw: C-contiguous (Z, Y, X) uint8 voxels; OUT.raw: uint8 labels (Z, Y, X). Exit 2 with
// libtpem's one-line message on an error.
import com.sun.jna.Callback;
import com.sun.jna.IntegerType;
import com.sun.jna.Library;
import com.sun.jna.Native;
import com.sun.jna.Pointer;
import com.sun.jna.ptr.PointerByReference;
import java.nio.file.Files;
import java.nio.file.Paths;

public class Segment {
    /** C's size_t: as wide as a pointer. */
    public static class SizeT extends IntegerType {
        public SizeT() { this(0); }
        public SizeT(long value) { super(Native.SIZE_T_SIZE, value, true); }
    }

    /** Nonzero cancels the run. */
    public interface Progress extends Callback { int invoke(double fraction, Pointer user); }

    public interface Tpem extends Library {
        Tpem LIB = Native.load("tpem", Tpem.class);
        int tpem_abi_version();
        SizeT tpem_last_error(byte[] buf, SizeT len);
        int tpem_model_open(String dir, String options, PointerByReference model);
        void tpem_model_close(Pointer model);
        int tpem_segment(Pointer model, byte[] data, int dtype, long[] shapeCzyx, double[] spacingZyx, int output,
                         byte[] labels, SizeT outBytes, Progress progress, Pointer user);
    }

    static String lastError() {
        byte[] buf = new byte[1024];
        int n = Tpem.LIB.tpem_last_error(buf, new SizeT(buf.length)).intValue();
        return new String(buf, 0, Math.min(n, buf.length - 1), java.nio.charset.StandardCharsets.UTF_8);
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 6) {
            System.err.println("usage: java Segment PACKAGE IN.raw Z Y X OUT.raw");
            System.exit(2);
        }
        long[] shape = {1, Long.parseLong(args[2]), Long.parseLong(args[3]), Long.parseLong(args[4])};
        byte[] stack = Files.readAllBytes(Paths.get(args[1]));
        byte[] labels = new byte[stack.length];
        PointerByReference handle = new PointerByReference();
        if (Tpem.LIB.tpem_model_open(args[0], "{\"threads\": 2}", handle) != 0) {
            System.err.println("Segment: open: " + lastError());
            System.exit(2);
        }
        Pointer model = handle.getValue();
        String error = null;
        try {
            // JNA copies primitive arrays in and back out around the call; null spacing: the model's.
            Progress progress = (fraction, user) -> 0;
            int status = Tpem.LIB.tpem_segment(model, stack, 0 /* U8 */, shape, null, 0 /* labels */, labels,
                                               new SizeT(labels.length), progress, null);
            if (status != 0) error = lastError();
        } finally {
            Tpem.LIB.tpem_model_close(model);
        }
        if (error != null) {
            System.err.println("Segment: segment: " + error);
            System.exit(2);
        }
        Files.write(Paths.get(args[5]), labels);
        System.out.println("libtpem ABI " + Tpem.LIB.tpem_abi_version() + ": " + labels.length + " labels written");
    }
}
