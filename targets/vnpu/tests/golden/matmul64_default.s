load dst=L0A[0]:f16 src=gm[0]:f32 shape=[32,32] dst_strides=[32,1] src_strides=[64,1]
load dst=L0B[0]:f16 src=gm[16384]:f32 shape=[32,32] dst_strides=[32,1] src_strides=[64,1]
set_flag src=dma_in dst=cube id=0
wait_flag src=dma_in dst=cube id=0
mmad c=L0C[0]:f32 a=L0A[0]:f16 b=L0B[0]:f16 tiles=[2,2,2] accumulate=false
set_flag src=cube dst=dma_in id=2
load dst=L0A[2048]:f16 src=gm[128]:f32 shape=[32,32] dst_strides=[32,1] src_strides=[64,1]
load dst=L0B[2048]:f16 src=gm[24576]:f32 shape=[32,32] dst_strides=[32,1] src_strides=[64,1]
set_flag src=dma_in dst=cube id=1
wait_flag src=dma_in dst=cube id=1
mmad c=L0C[0]:f32 a=L0A[2048]:f16 b=L0B[2048]:f16 tiles=[2,2,2] accumulate=true
set_flag src=cube dst=dma_in id=3
set_flag src=cube dst=dma_out id=4
wait_flag src=cube dst=dma_out id=4
store dst=gm[32768]:f32 src=L0C[0]:f32 shape=[32,32] dst_strides=[64,1] src_strides=[32,1]
set_flag src=dma_out dst=cube id=6
wait_flag src=cube dst=dma_in id=2
load dst=L0A[0]:f16 src=gm[0]:f32 shape=[32,32] dst_strides=[32,1] src_strides=[64,1]
load dst=L0B[0]:f16 src=gm[16512]:f32 shape=[32,32] dst_strides=[32,1] src_strides=[64,1]
set_flag src=dma_in dst=cube id=0
wait_flag src=dma_in dst=cube id=0
mmad c=L0C[4096]:f32 a=L0A[0]:f16 b=L0B[0]:f16 tiles=[2,2,2] accumulate=false
set_flag src=cube dst=dma_in id=2
wait_flag src=cube dst=dma_in id=3
load dst=L0A[2048]:f16 src=gm[128]:f32 shape=[32,32] dst_strides=[32,1] src_strides=[64,1]
load dst=L0B[2048]:f16 src=gm[24704]:f32 shape=[32,32] dst_strides=[32,1] src_strides=[64,1]
set_flag src=dma_in dst=cube id=1
wait_flag src=dma_in dst=cube id=1
mmad c=L0C[4096]:f32 a=L0A[2048]:f16 b=L0B[2048]:f16 tiles=[2,2,2] accumulate=true
set_flag src=cube dst=dma_in id=3
set_flag src=cube dst=dma_out id=5
wait_flag src=cube dst=dma_out id=5
store dst=gm[32896]:f32 src=L0C[4096]:f32 shape=[32,32] dst_strides=[64,1] src_strides=[32,1]
set_flag src=dma_out dst=cube id=7
wait_flag src=cube dst=dma_in id=2
load dst=L0A[0]:f16 src=gm[8192]:f32 shape=[32,32] dst_strides=[32,1] src_strides=[64,1]
load dst=L0B[0]:f16 src=gm[16384]:f32 shape=[32,32] dst_strides=[32,1] src_strides=[64,1]
set_flag src=dma_in dst=cube id=0
wait_flag src=dma_in dst=cube id=0
wait_flag src=dma_out dst=cube id=6
mmad c=L0C[0]:f32 a=L0A[0]:f16 b=L0B[0]:f16 tiles=[2,2,2] accumulate=false
set_flag src=cube dst=dma_in id=2
wait_flag src=cube dst=dma_in id=3
load dst=L0A[2048]:f16 src=gm[8320]:f32 shape=[32,32] dst_strides=[32,1] src_strides=[64,1]
load dst=L0B[2048]:f16 src=gm[24576]:f32 shape=[32,32] dst_strides=[32,1] src_strides=[64,1]
set_flag src=dma_in dst=cube id=1
wait_flag src=dma_in dst=cube id=1
mmad c=L0C[0]:f32 a=L0A[2048]:f16 b=L0B[2048]:f16 tiles=[2,2,2] accumulate=true
set_flag src=cube dst=dma_in id=3
set_flag src=cube dst=dma_out id=4
wait_flag src=cube dst=dma_out id=4
store dst=gm[40960]:f32 src=L0C[0]:f32 shape=[32,32] dst_strides=[64,1] src_strides=[32,1]
set_flag src=dma_out dst=cube id=6
wait_flag src=cube dst=dma_in id=2
load dst=L0A[0]:f16 src=gm[8192]:f32 shape=[32,32] dst_strides=[32,1] src_strides=[64,1]
load dst=L0B[0]:f16 src=gm[16512]:f32 shape=[32,32] dst_strides=[32,1] src_strides=[64,1]
set_flag src=dma_in dst=cube id=0
wait_flag src=dma_in dst=cube id=0
wait_flag src=dma_out dst=cube id=7
mmad c=L0C[4096]:f32 a=L0A[0]:f16 b=L0B[0]:f16 tiles=[2,2,2] accumulate=false
set_flag src=cube dst=dma_in id=2
wait_flag src=cube dst=dma_in id=3
load dst=L0A[2048]:f16 src=gm[8320]:f32 shape=[32,32] dst_strides=[32,1] src_strides=[64,1]
load dst=L0B[2048]:f16 src=gm[24704]:f32 shape=[32,32] dst_strides=[32,1] src_strides=[64,1]
set_flag src=dma_in dst=cube id=1
wait_flag src=dma_in dst=cube id=1
mmad c=L0C[4096]:f32 a=L0A[2048]:f16 b=L0B[2048]:f16 tiles=[2,2,2] accumulate=true
set_flag src=cube dst=dma_in id=3
set_flag src=cube dst=dma_out id=5
wait_flag src=cube dst=dma_out id=5
store dst=gm[41088]:f32 src=L0C[4096]:f32 shape=[32,32] dst_strides=[64,1] src_strides=[32,1]
set_flag src=dma_out dst=cube id=7
